"""The real packaged model end to end: build the shipped corpus, ask over HTTP, check citations."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.conftest import SEED_CORPUS

# Questions written for these tests (not the evaluation set), each with a phrase its answer
# must quote, so the pipeline is checked on more than the questions it was tuned with.
QUESTIONS = [
    ("Who is the head of product at Bloomberg?", "Vlad Kliatchko"),
    ("Which former governor became Bloomberg's chairman?", "Mark Carney"),
    ("How much do AI product managers earn?", "150,746"),
    ("What kind of school is CareerFoundry?", "online school"),
]
OUT_OF_SCOPE = ["What is the recipe for banana bread?", "When did the Roman empire fall?"]


def _norm(text: str) -> str:
    return " ".join(text.replace("\u2019", "'").lower().split())


def test_cited_answers_with_the_real_model(real_client: TestClient) -> None:
    source = (SEED_CORPUS / "head-of-product.txt").read_text("utf-8")
    for question, phrase in QUESTIONS:
        body = real_client.post("/api/ask", json={"question": question, "top_k": 3}).json()
        assert body["answered"], question
        assert _norm(phrase) in _norm(body["answer"]), (question, body["answer"])
        assert len(body["answer"]) <= 500
        for c in body["citations"]:
            assert source[c["start"] : c["end"]] == c["text"]
            assert len(c["text"]) <= 1200
        first = body["citations"][0]
        assert first["highlights"], "the quoted passage carries its highlighted sentence"
        h = first["highlights"][0]
        assert source[h["start"] : h["end"]] in body["answer"]


def test_out_of_scope_questions_are_declined(real_client: TestClient) -> None:
    for question in OUT_OF_SCOPE:
        body = real_client.post("/api/ask", json={"question": question}).json()
        assert body["answered"] is False, (question, body["answer"])
        assert "does not" in body["answer"]
        assert body["confidence"] < 0.5


def test_follow_up_through_chat(real_client: TestClient) -> None:
    messages = [{"role": "user", "content": "Tell me about Bloomberg's head of product."}]
    first = real_client.post("/api/chat", json={"messages": messages}).json()
    messages += [{"role": "assistant", "content": first["answer"]},
                 {"role": "user", "content": "Who became chairman of its board?"}]
    body = real_client.post("/api/chat", json={"messages": messages}).json()
    assert "Bloomberg" in body["query"]
    assert any("Mark Carney" in c["text"] for c in body["citations"])


def test_manifest_records_model_and_counts(real_client: TestClient) -> None:
    ready = real_client.get("/readyz").json()
    assert ready["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert ready["encoder"] == "onnx-int8"
    assert ready["documents"] == 1 and ready["chunks"] >= 10
    settings = real_client.app.state.settings  # type: ignore[attr-defined]
    version_dir = settings.index_dir / "versions" / ready["index_version"]
    manifest = json.loads((version_dir / "manifest.json").read_text("utf-8"))
    assert manifest["model"]["dimension"] == 384
    assert manifest["documents"] == 1 and manifest["chunks"] == ready["chunks"]
    assert set(manifest["files"]) >= {"dense.faiss", "chunks.json", "documents.jsonl"}
    assert manifest["corpus_hash"] and manifest["built_at"]

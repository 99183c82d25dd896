"""The HTTP contract of DESIGN.md, through the real app (fake encoder for speed)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import StartupError, create_app
from service.index.indexing import build_index
from service.settings import Settings
from tests.conftest import FakeEncoder


def _verify(client: TestClient, citation: dict[str, object]) -> None:
    doc = client.get(f"/api/documents/{citation['doc_id']}").json()
    start, end = int(str(citation["start"])), int(str(citation["end"]))
    assert doc["text"][start:end] == citation["text"]
    highlights = citation["highlights"]
    assert isinstance(highlights, list)
    for h in highlights:
        assert start <= h["start"] < h["end"] <= end


def test_ask_shape_and_verbatim_citations(fake_client: TestClient) -> None:
    r = fake_client.post("/api/ask", json={"question": "Who chairs Bloomberg's new board?"})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"question", "answer", "answer_parts", "answered", "confidence",
                         "citations", "index_version", "took_ms", "answer_id"}
    assert body["question"] == "Who chairs Bloomberg's new board?"
    assert body["answer"] == " ".join(
        p["text"] + (f" [{p['citation']}]" if p["citation"] is not None else "")
        for p in body["answer_parts"])
    assert 1 <= len(body["citations"]) <= 3
    assert [c["n"] for c in body["citations"]] == list(range(1, len(body["citations"]) + 1))
    for c in body["citations"]:
        assert set(c) == {"n", "doc_id", "title", "heading", "start", "end", "text", "score",
                          "highlights"}
        assert c["doc_id"] == "head-of-product.txt"
        assert len(c["text"]) <= 1200
        _verify(fake_client, c)
    ready = fake_client.get("/readyz").json()
    assert body["index_version"] == ready["index_version"]


def test_answer_markers_point_at_listed_citations(fake_client: TestClient) -> None:
    body = fake_client.post("/api/ask", json={"question": "What does the VP of Product focus on?",
                                              "top_k": 5}).json()
    import re

    markers = {int(m) for m in re.findall(r"\[(\d+)\]", body["answer"])}
    if body["answered"]:
        assert markers, "an answer cites its sources"
        assert markers <= {c["n"] for c in body["citations"]}
        # Cited passages come first and carry highlights.
        assert markers == set(range(1, len(markers) + 1))
        for c in body["citations"]:
            assert bool(c["highlights"]) == (c["n"] in markers)
    else:
        assert not markers


def test_top_k_bounds_the_citations(fake_client: TestClient) -> None:
    for k in (1, 2, 7):
        body = fake_client.post("/api/ask", json={"question": "head of product", "top_k": k})
        assert len(body.json()["citations"]) <= k


def test_chat_returns_the_standalone_query(fake_client: TestClient) -> None:
    messages = [
        {"role": "user", "content": "What does a VP of Product do?"},
        {"role": "assistant", "content": "They focus on product specifics [1]."},
        {"role": "user", "content": "Which tool might they use for feedback?"},
    ]
    r = fake_client.post("/api/chat", json={"messages": messages})
    assert r.status_code == 200
    body = r.json()
    assert body["question"] == "Which tool might they use for feedback?"
    assert body["query"] == "Which tool might they use for feedback? (VP of Product)"


def test_chat_with_hostile_earlier_turns_answers_promptly(
        fake_client: TestClient, within: Callable[[float], AbstractContextManager[None]]) -> None:
    # Runs of spaces once made follow-up resolution backtrack on the event loop: 24 s for this
    # first turn, hours for a 4,000-character one (test_conversation feeds those to it).
    turns = ["zebra" + " " * 550 + "giraffe", "what about" + " " * 3980 + "x",
             "tell me " * 499 + "do" + " " * 3]
    for turn in turns:
        messages = [{"role": "user", "content": turn}, {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": "and it?"}]
        with within(5.0):
            r = fake_client.post("/api/chat", json={"messages": messages})
        assert r.status_code == 200


@pytest.mark.parametrize(
    "payload",
    [
        {"question": ""},
        {"question": "   \n\t "},
        {"question": "x" * 1001},
        {"question": "bell\x07"},
        {"question": "nul\x00"},
        {"question": "carriage\rreturn"},
        {"question": "fine", "top_k": 0},
        {"question": "fine", "top_k": 51},
        {"question": "fine", "top_k": "3"},
        {"question": "fine", "top_k": True},
        {"question": 42},
        {},
        [],
    ],
)
def test_bad_ask_input_is_422_with_a_message(fake_client: TestClient, payload: object) -> None:
    r = fake_client.post("/api/ask", json=payload)
    assert r.status_code == 422
    assert r.json()["detail"]


def test_lone_surrogate_is_422(fake_client: TestClient) -> None:
    r = fake_client.post("/api/ask", content=b'{"question": "bad \\ud800 one"}',
                         headers={"Content-Type": "application/json"})
    assert r.status_code == 422


def test_nfkc_and_trimming_apply_before_the_length_check(fake_client: TestClient) -> None:
    # U+FB01 (the "fi" ligature) becomes two characters under NFKC.
    r = fake_client.post("/api/ask", json={"question": "  \ufb01nd the head of product  "})
    assert r.status_code == 200
    assert r.json()["question"] == "find the head of product"


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "assistant", "content": "hi"}],
        [{"role": "system", "content": "hi"}],
        [{"role": "user", "content": "x" * 4001}],
        [{"role": "user", "content": "q"}] * 21,
        [{"role": "user", "content": "y" * 1001}],
    ],
)
def test_bad_chat_input_is_422(fake_client: TestClient, messages: list[object]) -> None:
    r = fake_client.post("/api/chat", json={"messages": messages})
    assert r.status_code == 422


def test_body_over_64_kib_is_413_even_without_content_length(fake_client: TestClient) -> None:
    big = b'{"question": "' + b"a" * 70_000 + b'"}'
    r = fake_client.post("/api/ask", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert "limit" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:
        yield b'{"question": "'
        for _ in range(80):
            yield b"a" * 1000
        yield b'"}'

    r = fake_client.post("/api/ask", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_documents_route(fake_client: TestClient, corpus_dir: Path) -> None:
    body = fake_client.get("/api/documents/head-of-product.txt").json()
    assert body["text"] == (corpus_dir / "head-of-product.txt").read_text("utf-8")
    assert body["title"].startswith("What Is the Difference")
    missing = fake_client.get("/api/documents/nope.txt")
    assert missing.status_code == 404 and "nope.txt" in missing.json()["detail"]


def test_health_and_readiness(fake_client: TestClient) -> None:
    assert fake_client.get("/healthz").json() == {"status": "ok"}
    ready = fake_client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert (ready["documents"], ready["chunks"]) == (1, ready["chunks"])
    assert ready["chunks"] > 5 and ready["model"] == "fake" and ready["encoder"] == "fake"


def test_startup_without_index_or_corpus_says_what_to_run(tmp_path: Path) -> None:
    empty = tmp_path / "corpus"
    empty.mkdir()
    settings = Settings(corpus_dir=empty, index_dir=tmp_path / "index")
    with pytest.raises(StartupError, match="no index .* and no documents .*make index"):
        create_app(settings, encoder=FakeEncoder())
    (empty / "a.txt").write_text("Some text.", "utf-8")
    with pytest.raises(StartupError, match=r"no index in .*: run `make index`"):
        create_app(settings, encoder=FakeEncoder())


def test_index_built_with_another_model_is_refused(fake_settings: Settings) -> None:
    other = FakeEncoder(dimension=32)
    with pytest.raises(StartupError, match="built with model .*rebuild"):
        create_app(fake_settings, encoder=other)


def test_citation_markers_are_structural_not_found_in_quoted_text(
        fake_settings: Settings, fake_encoder: FakeEncoder) -> None:
    # Academic text carries its own bracketed references; they must stay text.
    (fake_settings.corpus_dir / "refs.txt").write_text(
        "Thermal notes\n\nGraphene conducts heat better than copper [2] at room temperature "
        "[17]. Unrelated filler sentence about weather.\n", "utf-8")
    build_index(fake_settings, encoder=fake_encoder)
    with TestClient(create_app(fake_settings, encoder=fake_encoder)) as client:
        body = client.post("/api/ask", json={
            "question": "Does graphene conduct heat better than copper at room temperature?",
            "top_k": 3}).json()
    assert body["answered"], body
    first = body["answer_parts"][0]
    assert "copper [2] at room temperature [17]." in first["text"]
    cited = body["citations"][first["citation"] - 1]
    assert cited["doc_id"] == "refs.txt"
    assert all(p["citation"] is None or 1 <= p["citation"] <= len(body["citations"])
               for p in body["answer_parts"])


def test_declined_answers_are_one_part_without_a_citation(fake_client: TestClient) -> None:
    body = fake_client.post("/api/ask", json={"question": "zzqx vvkw"}).json()
    assert body["answered"] is False
    assert body["answer_parts"] == [{"text": body["answer"], "citation": None}]


def test_document_ids_with_dot_segments_resolve_when_encoded(
        fake_settings: Settings, fake_encoder: FakeEncoder) -> None:
    # The widget sends the id as one encoded segment (slashes as %2F), so a browser never
    # resolves its dot segments.
    (fake_settings.corpus_dir / "odd.jsonl").write_text(
        '{"id": "x/../../metrics", "text": "A record whose id has dot segments."}\n'
        '{"id": "./.", "text": "Another one."}\n', "utf-8")
    build_index(fake_settings, encoder=fake_encoder)
    with TestClient(create_app(fake_settings, encoder=fake_encoder)) as client:
        for doc_id, url in [("x/../../metrics", "x%2F..%2F..%2Fmetrics"), ("./.", ".%2F.")]:
            r = client.get(f"/api/documents/{url}")
            assert r.status_code == 200 and r.json()["doc_id"] == doc_id, r.text


def test_with_a_default_collection_the_first_routes_ask_it(collections_file: Path,
                                                          fake_encoder: FakeEncoder) -> None:
    """A collections file that declares `default`: /api/ask and the rest mean that one."""
    text = collections_file.read_text("utf-8").replace("[collections.article]",
                                                       "[collections.default]")
    collections_file.write_text(text, "utf-8")
    settings = Settings(collections_file=collections_file, rate_limit=0)
    with TestClient(create_app(settings, encoder=fake_encoder)) as client:
        ask = {"question": "Who chairs Bloomberg's new board?"}
        old = client.post("/api/ask", json=ask).json()
        new = client.post("/api/collections/default/ask", json=ask).json()
        assert old["citations"] == new["citations"] and old["index_version"] == new[
            "index_version"]
        assert client.get("/api/documents/head-of-product.txt").status_code == 200
        assert client.get("/api/documents/keeper.md").status_code == 404
        ready = client.get("/readyz").json()
        assert ready["index_version"] == old["index_version"]
        assert [c["name"] for c in ready["collections"]] == ["default"]
        page = client.get("/").text
        assert "<h1>The article</h1>" in page and 'data-collection="default"' in page

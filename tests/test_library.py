"""Two collections from different corpora in one service (real model, real FAISS): nothing of
one ever reaches the other, and a collection the caller may not read does not exist for it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.catalog import Collection
from service.http.identity import ANONYMOUS, Identity, current_identity
from service.http.library import Library
from service.index import store
from service.index.encoder import OnnxEncoder, describe_model
from service.index.indexing import build_index, encoder_folder
from service.settings import Settings
from service.usage.records import answers
from tests.conftest import NOTES_CORPUS, SEED_CORPUS, write_corpus

ARTICLE_ORIGIN = "https://article.example"
VAULT_ORIGIN = "https://vault.example"
HR = Identity("ann", frozenset({"hr"}))
SALES = Identity("bob", frozenset({"sales"}))
VAULT = NOTES_CORPUS
QUESTIONS = ["Who writes in the red ledger?", "Is head of product higher than director?",
             "When is the lamp oil delivered?"]
CATALOG = f"""
[collections.article]
title = "The article"
corpus_dir = "article-corpus"
index_dir = "indexes/article"
allowed_origins = ["{ARTICLE_ORIGIN}"]
access = "public"
questions = ["Is head of product higher than director?"]

[collections.vault]
title = "The vault"
corpus_dir = "vault-corpus"
index_dir = "indexes/vault"
allowed_origins = ["{VAULT_ORIGIN}"]
access = ["hr", "managers"]
"""


@dataclass
class Caller:
    """Who the test client is, through the identity seam the authentication layer fills."""

    identity: Identity = ANONYMOUS


def _index(corpus: Path, index: Path, encoder_dir: Path) -> None:
    # Reuse the session's ONNX export rather than exporting the model again.
    shutil.copytree(encoder_dir, encoder_folder(index, OnnxEncoder.kind, describe_model(None)))
    build_index(Settings(corpus_dir=corpus, index_dir=index))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, real_encoder_dir: Path) -> Path:
    """The collections file beside both corpora and their indexes."""
    root = tmp_path_factory.mktemp("collections")
    shutil.copytree(SEED_CORPUS, root / "article-corpus")
    write_corpus(root / "vault-corpus", VAULT)
    _index(root / "article-corpus", root / "indexes" / "article", real_encoder_dir)
    _index(root / "vault-corpus", root / "indexes" / "vault", real_encoder_dir)
    (root / "collections.toml").write_text(CATALOG, "utf-8")
    return root


@pytest.fixture(scope="module")
def caller() -> Caller:
    return Caller()


@pytest.fixture(scope="module")
def client(folder: Path, caller: Caller) -> Iterator[TestClient]:
    settings = Settings(collections_file=folder / "collections.toml", rate_limit=0,
                        data_dir=folder / "data")
    app = create_app(settings)

    async def identity() -> Identity:
        return caller.identity

    app.dependency_overrides[current_identity] = identity
    with TestClient(app) as c:
        yield c


@pytest.fixture
def as_(caller: Caller) -> Iterator[Caller]:
    yield caller
    caller.identity = ANONYMOUS


def _doc_ids(body: dict[str, Any]) -> set[str]:
    return {c["doc_id"] for c in body["citations"]}


def _said(body: dict[str, Any]) -> str:
    """What an answer says of its corpus: the answer and every cited passage."""
    return " ".join([body["answer"], *(c["text"] + c["title"] for c in body["citations"])])


def _routes(name: str, doc_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    base = f"/api/collections/{name}"
    return [("GET", base, None),
            ("POST", f"{base}/ask", {"question": QUESTIONS[0]}),
            ("POST", f"{base}/ask", {"question": ""}),  # invalid input: still the same 404
            ("POST", f"{base}/chat", {"messages": [{"role": "user", "content": QUESTIONS[0]}]}),
            ("GET", f"{base}/documents/{doc_id}", None),
            ("GET", f"{base}/documents/{doc_id}/source", None)]


def test_a_forbidden_collection_is_exactly_an_unknown_one(client: TestClient,
                                                          as_: Caller) -> None:
    # From any page too: the Origin a probe sends (the vault's own, which an intranet's is
    # easy to guess) must not tell a declared name from one never declared.
    pages: list[dict[str, str]] = [{}, {"Origin": VAULT_ORIGIN}, {"Origin": ARTICLE_ORIGIN}]
    for who in (ANONYMOUS, SALES, Identity("carol")):
        as_.identity = who
        for (method, path, body), (_, unknown, _) in zip(
                _routes("vault", "keeper.md"), _routes("no-such", "keeper.md"), strict=True):
            for page in pages:
                forbidden = client.request(method, path, json=body, headers=page)
                missing = client.request(method, unknown, json=body, headers=page)
                assert forbidden.status_code == missing.status_code == 404, path
                assert forbidden.content == missing.content == b'{"detail":"no such collection"}'
                assert _shown(forbidden.headers) == _shown(missing.headers), (path, page)
                preflights = [client.options(p, headers={
                    **page, "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": "authorization,content-type"})
                              for p in (path, unknown)]
                assert preflights[0].status_code == preflights[1].status_code, (path, page)
                assert _shown(preflights[0].headers) == _shown(preflights[1].headers), (
                    path, page)
        listed = client.get("/api/collections").json()
        assert [c["name"] for c in listed] == ["article"]
        assert [c["name"] for c in client.get("/readyz").json()["collections"]] == ["article"]


def _shown(headers: Mapping[str, str]) -> dict[str, str]:
    """A response's headers but its request id (each response has its own)."""
    return {k: v for k, v in headers.items() if k != "x-request-id"}


def test_the_list_shows_what_the_caller_may_read(client: TestClient, as_: Caller) -> None:
    as_.identity = HR
    listed = {c["name"]: c for c in client.get("/api/collections").json()}
    assert set(listed) == {"article", "vault"}
    vault = listed["vault"]
    assert vault["title"] == "The vault" and vault["ready"] and vault["documents"] == 2
    assert vault["index_version"] == store.current_version(client.app.state.library.shelf(  # type: ignore[attr-defined]
        "vault").settings.index_dir)
    assert listed["article"]["questions"] == ["Is head of product higher than director?"]
    assert client.get("/api/collections/vault").json() == vault
    ready = client.get("/readyz").json()
    assert [c["name"] for c in ready["collections"]] == ["article", "vault"]


def test_answers_cite_only_their_own_collection(client: TestClient, as_: Caller) -> None:
    vault_docs, article_docs = set(VAULT), {"head-of-product.txt"}
    # Twice each: the second answers come from each collection's cache.
    for _ in range(2):
        for who in (ANONYMOUS, HR):
            as_.identity = who
            for question in QUESTIONS:
                for route, body in (("ask", {"question": question, "top_k": 5}),
                                    ("chat", {"messages": [{"role": "user",
                                                            "content": question}]})):
                    r = client.post(f"/api/collections/article/{route}", json=body)
                    assert r.status_code == 200
                    assert _doc_ids(r.json()) <= article_docs
                    said = _said(r.json())
                    assert "ledger" not in said and "lighthouse" not in said
                    v = client.post(f"/api/collections/vault/{route}", json=body)
                    if who is ANONYMOUS:
                        assert v.status_code == 404
                        continue
                    assert v.status_code == 200 and _doc_ids(v.json()) <= vault_docs
                    assert "head of product" not in _said(v.json()).lower()
    as_.identity = HR
    ledger = client.post("/api/collections/vault/ask", json={"question": QUESTIONS[0]}).json()
    assert ledger["answered"] and "keeper" in ledger["answer"]
    # Each answer names its own collection's version; the documents it cites are there.
    for c in ledger["citations"]:
        doc = client.get(f"/api/collections/vault/documents/{c['doc_id']}").json()
        assert doc["text"][c["start"]:c["end"]] == c["text"]
        assert doc["index_version"] == ledger["index_version"]


def test_documents_stay_in_their_collection(client: TestClient, as_: Caller) -> None:
    as_.identity = HR
    assert client.get("/api/collections/vault/documents/keeper.md").status_code == 200
    source = client.get("/api/collections/vault/documents/lamp/oil.txt/source")
    assert source.status_code == 200 and source.content == VAULT["lamp/oil.txt"].encode()
    assert client.get("/api/collections/article/documents/keeper.md").status_code == 404
    assert client.get("/api/collections/article/documents/lamp/oil.txt/source"
                      ).status_code == 404
    assert client.get("/api/collections/vault/documents/head-of-product.txt"
                      ).status_code == 404
    r = client.get("/api/collections/article/documents/head-of-product.txt")
    assert r.status_code == 200 and r.json()["doc_id"] == "head-of-product.txt"


def test_routes_before_collections_need_a_default_collection(client: TestClient,
                                                             as_: Caller) -> None:
    """This catalog declares no `default`: the old routes answer the same 404."""
    for who in (ANONYMOUS, HR):
        as_.identity = who
        for method, path, body in (
                ("POST", "/api/ask", {"question": QUESTIONS[0]}),
                ("POST", "/api/chat", {"messages": [{"role": "user", "content": "Hi?"}]}),
                ("GET", "/api/documents/keeper.md", None),
                ("GET", "/api/documents/head-of-product.txt/source", None)):
            r = client.request(method, path, json=body)
            assert (r.status_code, r.json()) == (404, {"detail": "no such collection"})


def test_cors_follows_each_collections_origins(client: TestClient) -> None:
    def preflight(path: str, origin: str) -> str | None:
        r = client.options(path, headers={"Origin": origin,
                                          "Access-Control-Request-Method": "POST",
                                          "Access-Control-Request-Headers":
                                              "authorization,content-type"})
        return r.headers.get("access-control-allow-origin")

    assert preflight("/api/collections/article/ask", ARTICLE_ORIGIN) == ARTICLE_ORIGIN
    assert preflight("/api/collections/article/ask", VAULT_ORIGIN) is None
    assert preflight("/api/collections/vault/chat", VAULT_ORIGIN) == VAULT_ORIGIN
    assert preflight("/api/collections/vault/chat", ARTICLE_ORIGIN) is None
    # Feedback serves every collection's widget.
    assert preflight("/api/feedback", VAULT_ORIGIN) == VAULT_ORIGIN
    assert preflight("/api/feedback", ARTICLE_ORIGIN) == ARTICLE_ORIGIN
    assert preflight("/api/ask", ARTICLE_ORIGIN) is None
    # A page of the restricted vault can read its 404s (the widget's "no access"), and, so
    # that the name does not show, the same for an undeclared name; the public article's page
    # gets neither.
    assert preflight("/api/collections/no-such/ask", VAULT_ORIGIN) == VAULT_ORIGIN
    assert preflight("/api/collections/no-such/ask", ARTICLE_ORIGIN) is None
    r = client.post("/api/collections/vault/ask", json={"question": QUESTIONS[0]},
                    headers={"Origin": VAULT_ORIGIN})
    assert r.status_code == 404 and r.headers["access-control-allow-origin"] == VAULT_ORIGIN


def test_metrics_and_records_carry_the_collection(client: TestClient, as_: Caller) -> None:
    as_.identity = ANONYMOUS
    for _ in range(3):  # probes of a forbidden and an unknown name add no series
        client.post("/api/collections/vault/ask", json={"question": QUESTIONS[2]})
        client.post("/api/collections/secret-plans/ask", json={"question": QUESTIONS[2]})
    labels = _collection_labels(client)
    assert "secret-plans" not in labels
    before = labels.get("vault", 0.0)
    article = client.post("/api/collections/article/ask", json={"question": QUESTIONS[1]})
    as_.identity = HR
    vault = client.post("/api/collections/vault/ask", json={"question": QUESTIONS[2]})
    labels = _collection_labels(client)
    assert labels["vault"] == before + 1
    text = client.get("/metrics").text
    assert 'qa_collection_ready{collection="vault"} 1.0' in text
    assert 'qa_collection_documents{collection="vault"} 2.0' in text
    recorder = client.app.state.recorder  # type: ignore[attr-defined]
    assert recorder.flush(5.0)
    rows = dict(recorder.store.query(sa.select(answers.c.id, answers.c.collection)))
    assert rows[article.json()["answer_id"]] == "article"
    assert rows[vault.json()["answer_id"]] == "vault"


def _collection_labels(client: TestClient) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name == "qa_collection_requests_total":
                found[s.labels["collection"]] = found.get(s.labels["collection"], 0) + s.value
    return found


def test_the_encoder_is_loaded_once_for_both(client: TestClient) -> None:
    library: Library = client.app.state.library  # type: ignore[attr-defined]
    article, vault = library.shelf("article"), library.shelf("vault")
    assert article is not None and vault is not None
    assert article.engine.snapshot.encoder is vault.engine.snapshot.encoder
    assert len(library.encoders) == 1


def test_paths_name_their_collection(tmp_path: Path, real_model: Any) -> None:
    def one(name: str, origins: tuple[str, ...],
            groups: frozenset[str] | None = None) -> Collection:
        return Collection(name, name, tmp_path / name, tmp_path / f"{name}-index", origins,
                          groups)

    library = Library(Settings(), [one("default", ("https://d.example",)),
                                   one("hr", ("https://h.example",), frozenset({"hr"})),
                                   one("ops", ("https://o.example",), frozenset({"ops"}))],
                      real_model)
    assert library.named_in("/api/collections/hr/ask") == "hr"
    assert library.named_in("/api/collections/hr/documents/a/b") == "hr"
    assert library.named_in("/api/collections/nope/ask") is None
    assert library.named_in("/api/ask") == library.named_in("/api/documents/x") == "default"
    assert library.named_in("/api/feedback") is None
    common = ("https://all.example",)
    # A public collection's routes: its own origins.
    assert library.origins_for("/api/chat", common) == ("https://all.example",
                                                        "https://d.example")
    # A restricted one's, and any undeclared name's: every restricted collection's, the same
    # for both, so CORS headers cannot tell the names apart.
    hidden = ("https://all.example", "https://h.example", "https://o.example")
    for path in ("/api/collections/hr/chat", "/api/collections/ops/documents/x",
                 "/api/collections/nope/ask", "/api/collections/"):
        assert library.origins_for(path, common) == hidden, path
    assert library.origins_for("/api/feedback", common) == (
        "https://all.example", "https://d.example", "https://h.example", "https://o.example")
    assert library.origins_for("/metrics", common) == common
    # Without a `default`, the routes that mean it are those of an undeclared name.
    no_default = Library(Settings(), [one("hr", ("https://h.example",), frozenset({"hr"}))],
                         real_model)
    assert no_default.origins_for("/api/ask", common) == ("https://all.example",
                                                          "https://h.example")

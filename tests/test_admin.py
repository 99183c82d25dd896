"""Admin routes: token checks, new text over HTTP with the builder's validation, build jobs."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.app import create_app
from service.index import store
from service.index.indexing import VECTORS, build_index
from service.settings import Settings
from tests.conftest import FakeEncoder

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TOKEN = "s3cret-admin-token-" + "x" * 20
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _admin_settings(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"admin_token": SecretStr(TOKEN), "reload_interval": 0,
                                       "admin_rate_limit": 3, **changes})


@pytest.fixture
def admin_settings(fake_settings: Settings) -> Settings:
    return _admin_settings(fake_settings, max_file_bytes=200_000)


@pytest.fixture
def admin(admin_settings: Settings, fake_encoder: FakeEncoder) -> Iterator[TestClient]:
    with TestClient(create_app(admin_settings, encoder=fake_encoder)) as client:
        yield client


def _files(corpus_dir: Path) -> dict[str, bytes]:
    """Everything in the corpus folder, hidden files included."""
    return {p.relative_to(corpus_dir).as_posix(): p.read_bytes()
            for p in sorted(corpus_dir.rglob("*")) if p.is_file()}


def _wait(client: TestClient, job: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, "the build job never finished"
        time.sleep(0.02)
        job = client.get(f"/api/admin/builds/{job['id']}", headers=AUTH).json()
    return job


def test_admin_routes_are_off_without_a_token(fake_client: TestClient) -> None:
    assert fake_client.post("/api/admin/reload", headers=AUTH).status_code == 404
    assert fake_client.put("/api/admin/documents/a.txt", json={"text": "x"},
                           headers=AUTH).status_code in (404, 405)
    assert not [p for p in fake_client.get("/openapi.json").json()["paths"] if "admin" in p]


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer",
                                    f"Bearer {TOKEN}x", f"bearer {TOKEN[:-1]}"])
def test_a_missing_or_wrong_token_is_refused(admin: TestClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    r = admin.post("/api/admin/reload", headers=headers)
    assert r.status_code == 401
    assert r.json() == {"detail": "a valid admin bearer token is required"}
    assert r.headers["www-authenticate"] == "Bearer"


def test_failed_logins_are_rate_limited_and_tokens_never_logged(
        admin: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    assert admin.post("/api/admin/reload", headers=AUTH).status_code == 200
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            bad = admin.post("/api/admin/reload", headers={"Authorization": "Bearer guess-1234"})
            assert bad.status_code == 401
        limited = admin.post("/api/admin/reload", headers={"Authorization": "Bearer guess-5678"})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert "too many failed admin authentications" in limited.json()["detail"]
        # While limited, even the right token waits: guessing must not stay cheap.
        assert admin.post("/api/admin/reload", headers=AUTH).status_code == 429
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "admin authentication failed" in logged
    assert "guess-" not in logged and TOKEN not in logged


def test_put_text_then_build_then_ask(admin: TestClient, admin_settings: Settings) -> None:
    text = "Launch notes\n\nThe zeppelin programme is run by the head of airships.\n"
    r = admin.put("/api/admin/documents/notes/launch.md", json={"text": text}, headers=AUTH)
    assert r.status_code == 201
    assert r.json() == {"doc_id": "notes/launch.md", "created": True,
                        "bytes": len(text.encode()), "documents": 1}
    assert (admin_settings.corpus_dir / "notes" / "launch.md").read_text("utf-8") == text
    replaced = admin.put("/api/admin/documents/notes/launch.md", json={"text": text + "More.\n"},
                         headers=AUTH)
    assert replaced.status_code == 200 and replaced.json()["created"] is False
    assert not [n for n in _files(admin_settings.corpus_dir) if "upload" in n]

    started = admin.post("/api/admin/builds", headers=AUTH)
    assert started.status_code == 202
    job = started.json()
    assert started.headers["location"] == f"/api/admin/builds/{job['id']}"
    assert job["status"] in ("queued", "running", "succeeded")
    done = _wait(admin, job)
    assert done["status"] == "succeeded", done
    assert done["report"]["added"] == ["notes/launch.md"]
    assert done["report"]["embedded"] >= 1 and done["report"]["reused"] > 0
    assert done["index_version"] == done["report"]["version"]
    # The job keeps its last progress line: the embedding stage, finished.
    assert re.fullmatch(r"embedding chunks: ([\d,]+)/\1 \([\d.,]+/s, \d+s\)", done["progress"])
    assert admin.get("/readyz").json()["index_version"] == done["report"]["version"]
    body = admin.post("/api/ask", json={"question": "Who runs the zeppelin programme?"}).json()
    assert body["citations"][0]["doc_id"] == "notes/launch.md"


def test_put_an_uploaded_file(admin: TestClient, admin_settings: Settings) -> None:
    data = b"<html><title>Org chart</title><body><p>The CPO reports to the CEO.</p></body></html>"
    r = admin.put("/api/admin/documents/org.html", files={"file": ("org.html", data)},
                  headers=AUTH)
    assert r.status_code == 201 and r.json()["documents"] == 1
    assert (admin_settings.corpus_dir / "org.html").read_bytes() == data


def test_pdf_word_and_powerpoint_uploads_are_read_as_a_build_reads_them(
        admin: TestClient, admin_settings: Settings) -> None:
    for name in ("fmla.pdf", "work-schedules.docx", "advanced-sick-leave.pptx"):
        data = (FIXTURES / name).read_bytes()
        r = admin.put(f"/api/admin/documents/hr/{name}", files={"file": (name, data)},
                      headers=AUTH)
        assert r.status_code == 201 and r.json()["documents"] == 1, r.text
        assert (admin_settings.corpus_dir / "hr" / name).read_bytes() == data
    encrypted = admin.put("/api/admin/documents/hr/secret.pdf", headers=AUTH, files={
        "file": ("secret.pdf", (FIXTURES / "encrypted.pdf").read_bytes())})
    assert encrypted.status_code == 422
    assert "encrypted PDF" in encrypted.json()["detail"]
    assert not (admin_settings.corpus_dir / "hr" / "secret.pdf").exists()
    done = _wait(admin, admin.post("/api/admin/builds", headers=AUTH).json())
    assert done["status"] == "succeeded", done
    assert sorted(done["report"]["added"]) == [
        "hr/advanced-sick-leave.pptx", "hr/fmla.pdf", "hr/work-schedules.docx"]
    body = admin.post("/api/ask", json={"question": "How many weeks of FMLA leave can I take?",
                                        "top_k": 5}).json()
    pdf = [c for c in body["citations"] if c["doc_id"] == "hr/fmla.pdf"]
    assert pdf and all(c["page"] >= 1 for c in pdf), body


def test_an_upload_over_the_api_body_limit_is_accepted(admin: TestClient,
                                                       admin_settings: Settings) -> None:
    text = "Long appendix\n\n" + "The product council meets weekly. " * 4000  # ~130 kB
    assert len(text) > admin_settings.max_body_bytes
    r = admin.put("/api/admin/documents/appendix.txt", json={"text": text}, headers=AUTH)
    assert r.status_code == 201


BAD_UPLOADS: list[tuple[str, dict[str, Any], int, str]] = [
    ("%2E%2E/escape.txt", {"json": {"text": "x"}}, 422, "'..' path part"),
    ("/etc/passwd.txt", {"json": {"text": "x"}}, 422, "relative to the corpus folder"),
    (".hidden.txt", {"json": {"text": "x"}}, 422, "hidden file"),
    ("dir/.git/config.txt", {"json": {"text": "x"}}, 422, "hidden file"),
    ("a//b.txt", {"json": {"text": "x"}}, 422, "empty"),
    ("back%5Cslash.txt", {"json": {"text": "x"}}, 422, "backslash"),
    ("report.pdf", {"json": {"text": "x"}}, 422, "not a PDF file: its content looks like text"),
    ("report.doc", {"json": {"text": "x"}}, 422, "unsupported file type '.doc'"),
    ("noext", {"json": {"text": "x"}}, 422, "unsupported file type ''"),
    ("empty.txt", {"json": {"text": "  \n "}}, 422, "empty.txt: empty file"),
    ("bin.txt", {"files": {"file": ("b", b"abc\x00def")}}, 422, "bin.txt: binary file"),
    ("latin.txt", {"files": {"file": ("l", "caf\xe9".encode("latin-1"))}}, 422,
     "latin.txt: not valid UTF-8"),
    ("big.txt", {"json": {"text": "x" * 200_001}}, 413, "over the 200,000-byte limit"),
    ("bad.jsonl", {"json": {"text": '{"_id": "a", "text": "ok"}\n{not json}\n'}}, 422,
     "bad.jsonl:2: not valid JSON"),
    ("dup.jsonl", {"json": {"text": '{"_id": "head-of-product.txt", "text": "clash"}\n'}}, 422,
     "duplicate document id 'head-of-product.txt', already in head-of-product.txt"),
    ("twice.jsonl", {"json": {"text": '{"_id": "a", "text": "1"}\n{"_id": "a", "text": "2"}\n'}},
     422, "duplicate document id 'a' inside the file"),
    ("head-of-product.txt/under.txt", {"json": {"text": "x"}}, 422,
     "head-of-product.txt is a file, not a folder"),
    ("a" * 300 + ".txt", {"json": {"text": "x"}}, 422, "at most 255 bytes"),
    ("/".join(["d" * 100] * 6) + ".txt", {"json": {"text": "x"}}, 422, "1 to 512 characters"),
    ("report%E2%80%AEtxt.md", {"json": {"text": "x"}}, 422, "U+202E"),
    ("zero%E2%80%8Bwidth.txt", {"json": {"text": "x"}}, 422, "U+200B"),
    ("line%E2%80%A8sep.txt", {"json": {"text": "x"}}, 422, "U+2028"),
    ("private%EE%80%80.txt", {"json": {"text": "x"}}, 422, "U+E000"),
    ("bell%07.txt", {"json": {"text": "x"}}, 422, "U+0007"),
    ("dir/%2E/x.txt", {"json": {"text": "x"}}, 422, "'..' path part"),
    ("plain.txt", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415,
     "send JSON"),
    ("nofield.txt", {"json": {"body": "x"}}, 422, 'JSON {"text"'),
    ("noform.txt", {"files": {"other": ("o", b"x")}}, 422, '"file" field'),
]


@pytest.mark.parametrize(("doc_id", "body", "status", "message"), BAD_UPLOADS,
                         ids=[b[0][:40] for b in BAD_UPLOADS])
def test_bad_uploads_are_refused_and_nothing_is_written(
        admin: TestClient, admin_settings: Settings, doc_id: str, body: dict[str, Any],
        status: int, message: str) -> None:
    before = _files(admin_settings.corpus_dir)
    headers = {**AUTH, **body.pop("headers", {})}
    r = admin.put(f"/api/admin/documents/{doc_id}", headers=headers, **body)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert _files(admin_settings.corpus_dir) == before
    assert not (admin_settings.corpus_dir.parent / "escape.txt").exists()


def test_a_body_over_the_upload_limit_is_refused_before_the_route(
        admin: TestClient, admin_settings: Settings) -> None:
    before = _files(admin_settings.corpus_dir)
    r = admin.put("/api/admin/documents/huge.txt", json={"text": "y" * 300_000}, headers=AUTH)
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert _files(admin_settings.corpus_dir) == before


def test_uploads_never_go_through_a_symbolic_link(admin: TestClient,
                                                  admin_settings: Settings) -> None:
    corpus = admin_settings.corpus_dir
    outside = corpus.parent / "outside"
    outside.mkdir()
    (corpus / "linked").symlink_to(outside, target_is_directory=True)
    (corpus / "alias.txt").symlink_to(outside / "target.txt")
    for doc_id, message in [("linked/new.txt", "linked is a symbolic link"),
                            ("alias.txt", "is a symbolic link in the corpus")]:
        r = admin.put(f"/api/admin/documents/{doc_id}", json={"text": "x"}, headers=AUTH)
        assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("header", [None, "Bearer wrong-token-" + "x" * 20, f"Basic {TOKEN}"])
def test_without_the_token_an_upload_gets_only_the_api_body_limit(
        admin: TestClient, admin_settings: Settings, header: str | None) -> None:
    # The upload limit is for the admin: an outsider's body is cut at QA_MAX_BODY_BYTES before
    # it is read, so many of them cannot fill the memory.
    headers = {"Authorization": header} if header else {}
    body = {"text": "y" * (admin_settings.max_body_bytes + 10)}
    r = admin.put("/api/admin/documents/big.txt", json=body, headers=headers)
    assert r.status_code == 413
    assert f"{admin_settings.max_body_bytes:,}-byte limit" in r.json()["detail"]
    # A small body without the token reaches the route's own check: 401.
    small = admin.put("/api/admin/documents/big.txt", json={"text": "y"}, headers=headers)
    assert small.status_code == 401


def test_with_admin_routes_off_uploads_get_only_the_api_body_limit(
        fake_client: TestClient, fake_settings: Settings) -> None:
    body = {"text": "y" * (fake_settings.max_body_bytes + 10)}
    r = fake_client.put("/api/admin/documents/big.txt", json=body, headers=AUTH)
    assert r.status_code == 413
    assert f"{fake_settings.max_body_bytes:,}-byte limit" in r.json()["detail"]


def test_delete_a_document(admin: TestClient, admin_settings: Settings) -> None:
    admin.put("/api/admin/documents/old.txt", json={"text": "Old text."}, headers=AUTH)
    r = admin.delete("/api/admin/documents/old.txt", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"doc_id": "old.txt", "deleted": True}
    assert not (admin_settings.corpus_dir / "old.txt").exists()
    missing = admin.delete("/api/admin/documents/old.txt", headers=AUTH)
    assert missing.status_code == 404 and "no file 'old.txt'" in missing.json()["detail"]
    assert admin.delete("/api/admin/documents/%2E%2E/x.txt", headers=AUTH).status_code == 422


def test_a_failed_build_keeps_the_served_version(admin: TestClient,
                                                 admin_settings: Settings) -> None:
    served = admin.get("/readyz").json()["index_version"]
    assert admin.delete("/api/admin/documents/head-of-product.txt",
                        headers=AUTH).status_code == 200
    job = _wait(admin, admin.post("/api/admin/builds", headers=AUTH).json())
    assert job["status"] == "failed"
    assert "no usable documents" in job["error"] and job["report"] is None
    assert job["index_version"] == served
    assert admin.get("/readyz").json()["index_version"] == served
    assert store.current_version(admin_settings.index_dir) == served


def test_a_build_while_the_lock_is_held_is_refused(admin: TestClient,
                                                   admin_settings: Settings) -> None:
    with store.build_lock(admin_settings.index_dir):
        r = admin.post("/api/admin/builds", headers=AUTH, json={"force": True})
        assert r.status_code == 409
        assert f"pid {os.getpid()} on" in r.json()["detail"]
    job = _wait(admin, admin.post("/api/admin/builds", headers=AUTH, json={"force": True}).json())
    assert job["status"] == "succeeded" and job["report"]["published"]
    assert job["report"]["embedded"] == 0


class GatedEncoder(FakeEncoder):
    """Holds every passage batch until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def encode_passages(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]],
                        batch_size: int = 32, done: Callable[[int], None] | None = None,
                        ) -> tuple[np.ndarray, list[np.ndarray]]:
        self.waiting.set()
        assert self.gate.wait(30)
        return super().encode_passages(texts, spans, batch_size, done)


def test_one_build_job_at_a_time(fake_settings: Settings) -> None:
    encoder = GatedEncoder()
    settings = _admin_settings(fake_settings)
    (settings.corpus_dir / "new.txt").write_text("A new page about pricing.", "utf-8")
    with TestClient(create_app(settings, encoder=encoder)) as client:
        first = client.post("/api/admin/builds", headers=AUTH).json()
        assert encoder.waiting.wait(30)
        second = client.post("/api/admin/builds", headers=AUTH)
        assert second.status_code == 409
        assert second.json() == {"detail": f"build {first['id']} is already running"}
        status = client.get(f"/api/admin/builds/{first['id']}", headers=AUTH).json()
        assert status["status"] == "running" and status["started_at"]
        encoder.gate.set()
        assert _wait(client, first)["status"] == "succeeded"


def test_unknown_build_is_404(admin: TestClient) -> None:
    r = admin.get("/api/admin/builds/0123456789ab", headers=AUTH)
    assert r.status_code == 404 and "no build '0123456789ab'" in r.json()["detail"]


def test_reload_route(admin: TestClient, admin_settings: Settings,
                      fake_encoder: FakeEncoder) -> None:
    served = admin.get("/readyz").json()["index_version"]
    assert admin.post("/api/admin/reload", headers=AUTH).json() == {
        "index_version": served, "reloaded": False}
    newer = build_index(admin_settings, encoder=fake_encoder, force=True).version
    assert admin.post("/api/admin/reload", headers=AUTH).json() == {
        "index_version": newer, "reloaded": True}
    damaged = build_index(admin_settings, encoder=fake_encoder, force=True).version
    (admin_settings.index_dir / "versions" / str(damaged) / VECTORS).write_bytes(b"x")
    r = admin.post("/api/admin/reload", headers=AUTH)
    assert r.status_code == 409
    assert "vectors.npy" in r.json()["detail"]
    assert r.json()["detail"].endswith(f"(still serving {newer})")
    assert admin.get("/readyz").json()["index_version"] == newer


@pytest.fixture
def collections_admin(collections_file: Path, fake_encoder: FakeEncoder) -> Iterator[TestClient]:
    settings = _admin_settings(Settings(collections_file=collections_file, rate_limit=0))
    with TestClient(create_app(settings, encoder=fake_encoder)) as client:
        yield client


def test_admin_routes_take_the_collection(collections_admin: TestClient,
                                          collections_file: Path) -> None:
    root = collections_file.parent
    versions = {name: store.current_version(root / "index" / name)
                for name in ("article", "notes")}
    base = "/api/admin/collections/notes"
    r = collections_admin.put(f"{base}/documents/bell.txt", headers=AUTH,
                              json={"text": "The fog bell rings every minute in fog."})
    assert r.status_code == 201
    assert (root / "notes" / "bell.txt").is_file() and not (root / "article" / "bell.txt").exists()
    started = collections_admin.post(f"{base}/builds", headers=AUTH)
    assert started.status_code == 202
    assert started.headers["location"] == f"{base}/builds/{started.json()['id']}"
    job = started.json()
    deadline = time.monotonic() + 30
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, "the build job never finished"
        time.sleep(0.02)
        job = collections_admin.get(f"{base}/builds/{job['id']}", headers=AUTH).json()
    assert job["status"] == "succeeded" and job["report"]["added"] == ["bell.txt"]
    # Served at once, and only there; the other collection's jobs do not know this one.
    assert job["index_version"] == store.current_version(root / "index" / "notes")
    assert job["index_version"] != versions["notes"]
    assert store.current_version(root / "index" / "article") == versions["article"]
    assert collections_admin.get(f"/api/admin/collections/article/builds/{job['id']}",
                                 headers=AUTH).status_code == 404
    reloaded = collections_admin.post("/api/admin/collections/article/reload", headers=AUTH)
    assert reloaded.json() == {"index_version": versions["article"], "reloaded": False}
    assert collections_admin.delete(f"{base}/documents/bell.txt", headers=AUTH).status_code == 200
    # Unknown names (admins may know every name); no `default` here for the old routes.
    for method, path in (("POST", "/api/admin/collections/nope/builds"),
                         ("POST", "/api/admin/collections/nope/reload"),
                         ("POST", "/api/admin/builds"), ("POST", "/api/admin/reload")):
        r = collections_admin.request(method, path, headers=AUTH)
        assert r.status_code == 404 and "no collection" in r.json()["detail"]
    # The token is checked first, whatever the collection.
    assert collections_admin.post(f"{base}/builds").status_code == 401
    # Insights per collection; without one named, the first declared (there is no default).
    insights = collections_admin.get("/api/admin/insights", headers=AUTH).json()
    assert insights["collection"] == "article"
    notes = collections_admin.get("/api/admin/insights?collection=notes", headers=AUTH)
    assert notes.status_code == 200 and notes.json()["collection"] == "notes"
    assert collections_admin.get("/api/admin/insights?collection=nope",
                                 headers=AUTH).status_code == 404

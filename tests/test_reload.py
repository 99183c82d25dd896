"""Hot reload: the engine swaps whole versions, refuses bad ones, and clients never notice."""

from __future__ import annotations

import dataclasses
import functools
import logging
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.app import StartupError, create_app
from service.index import store
from service.index.indexing import VECTORS, build_index
from service.qa.engine import Engine, ReloadWatcher
from service.qa.retrieval import load_index
from service.settings import Settings
from tests.conftest import FakeEncoder

TOKEN = "t" * 40


def _engine(settings: Settings, encoder: FakeEncoder) -> Engine:
    engine = Engine(settings, encoder.model, encoder)
    engine.load()
    return engine


def _publish(settings: Settings, encoder: FakeEncoder, note: str) -> str:
    """A new version whose corpus differs from the last one by a note."""
    (settings.corpus_dir / "note.txt").write_text(f"Release note\n\n{note}\n", "utf-8")
    report = build_index(settings, encoder=encoder)
    assert report.published and report.version
    return report.version


def _wait_for(condition: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def test_reload_serves_a_new_version_and_keeps_old_snapshots_whole(
        fake_settings: Settings, fake_encoder: FakeEncoder) -> None:
    engine = _engine(fake_settings, fake_encoder)
    old = engine.snapshot
    assert engine.reload_if_changed() is False
    new_version = _publish(fake_settings, fake_encoder, "The roadmap is owned by product.")
    assert engine.reload_if_changed() is True
    assert engine.served_version == new_version and old.version != new_version
    # A request that took the old snapshot finishes on it, with the old documents.
    answer = old.ask("Who owns the roadmap?", 3)
    assert all(c.doc_id in old.index.documents for c in answer.citations)
    assert "note.txt" not in old.index.documents
    assert "note.txt" in engine.snapshot.index.documents


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_version_is_refused_and_the_old_one_kept(
        fake_settings: Settings, fake_encoder: FakeEncoder, damage: str) -> None:
    engine = _engine(fake_settings, fake_encoder)
    good = engine.served_version
    bad = _publish(fake_settings, fake_encoder, "Damaged on disk.")
    path = fake_settings.index_dir / "versions" / bad / VECTORS
    if damage == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x40
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.unlink()
    with pytest.raises(store.IndexUnavailable, match=f"{bad}/vectors.npy"):
        engine.reload_if_changed()
    assert engine.served_version == good
    # Versions never change once published: the watcher does not read it again...
    assert engine.reload_if_changed() is False
    # ...unless asked to, and it is refused again.
    with pytest.raises(store.IndexUnavailable):
        engine.reload_if_changed(retry=True)
    assert engine.served_version == good
    newer = _publish(fake_settings, fake_encoder, "Fixed by a rebuild.")
    assert engine.reload_if_changed() is True and engine.served_version == newer


def test_an_index_from_another_model_or_chunker_is_refused(
        fake_settings: Settings, fake_encoder: FakeEncoder, tmp_path: Path) -> None:
    engine = _engine(fake_settings, fake_encoder)
    good = engine.served_version
    narrow = FakeEncoder(dimension=32)
    narrow.model = dataclasses.replace(narrow.model, fingerprint="fake0032")
    build_index(fake_settings, encoder=narrow)
    with pytest.raises(store.IndexUnavailable, match="32 dimensions.*64 dimensions"):
        engine.reload_if_changed()
    assert engine.served_version == good

    other = fake_settings.model_copy(update={"chunk_chars": 400})
    build_index(other, encoder=fake_encoder)
    with pytest.raises(store.IndexUnavailable, match="QA_CHUNK_CHARS=400.*QA_CHUNK_CHARS=700"):
        engine.reload_if_changed()
    assert engine.served_version == good
    with pytest.raises(StartupError, match="QA_CHUNK_CHARS=400"):
        create_app(fake_settings, encoder=fake_encoder)


def test_watcher_serves_new_versions_and_logs_refusals(
        fake_settings: Settings, fake_encoder: FakeEncoder,
        caplog: pytest.LogCaptureFixture) -> None:
    settings = fake_settings.model_copy(update={"reload_interval": 0.02})
    with TestClient(create_app(settings, encoder=fake_encoder)) as client:
        first = client.get("/readyz").json()["index_version"]
        second = _publish(settings, fake_encoder, "Picked up by polling.")
        _wait_for(lambda: client.get("/readyz").json()["index_version"] == second, "the watcher")
        assert first != second

        # Damaged before CURRENT names it: the watcher must never see it intact.
        bad = "29991231T000000000Z-damaged"
        versions = settings.index_dir / "versions"
        shutil.copytree(versions / second, versions / bad)
        (versions / bad / VECTORS).write_bytes(b"junk")
        store.set_current(settings.index_dir, bad)
        with caplog.at_level(logging.ERROR, logger="service.qa.engine"):
            _wait_for(lambda: any(bad in r.getMessage() for r in caplog.records), "a refusal")
        assert client.get("/readyz").json()["index_version"] == second
        assert client.post("/api/ask", json={"question": "head of product"}).status_code == 200


def test_watcher_stops_with_the_app(fake_settings: Settings, fake_encoder: FakeEncoder) -> None:
    settings = fake_settings.model_copy(update={"reload_interval": 0.02})
    before = set(threading.enumerate())
    with TestClient(create_app(settings, encoder=fake_encoder)):
        started = [t for t in threading.enumerate()
                   if t.name == "index-reload" and t not in before]
        assert len(started) == 1 and started[0].is_alive()
    assert not started[0].is_alive()
    with pytest.raises(ValueError):
        ReloadWatcher(_engine(fake_settings, fake_encoder), 0)


@contextmanager
def _serve(app: FastAPI) -> Iterator[str]:
    """The app on a real loopback socket, in this process (so the test can publish)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: server.started, "the server to start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


def _serving(base: str, version: str) -> bool:
    return bool(httpx.get(f"{base}/readyz").json()["index_version"] == version)


def _grown(results: list[Any], size: int) -> bool:
    return len(results) >= size


QUESTIONS = ["Who chairs Bloomberg's new board?", "What does the VP of Product focus on?",
             "What does the release note say?", "Is head of product higher than director?"]


def test_clients_asking_through_reloads_never_fail(fake_settings: Settings,
                                                   fake_encoder: FakeEncoder) -> None:
    settings = fake_settings.model_copy(update={"reload_interval": 0.05, "keep_versions": 20,
                                                "cache_size": 0,
                                                "admin_token": SecretStr(TOKEN)})
    published = {str(store.current_version(settings.index_dir))}
    results: list[tuple[int, dict[str, Any]]] = []
    stop = threading.Event()

    def ask_continuously(base: str, offset: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            for i in range(100_000):  # bounded; the test stops it long before
                if stop.is_set():
                    return
                r = http.post("/api/ask", json={"question": QUESTIONS[(i + offset) % 4]})
                results.append((r.status_code, r.json()))

    with _serve(create_app(settings, encoder=fake_encoder)) as base:
        clients = [threading.Thread(target=ask_continuously, args=(base, n)) for n in range(4)]
        for c in clients:
            c.start()
        admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"})
        for n in range(12):
            version = _publish(settings, fake_encoder, f"Revision {n}: the roadmap moved.")
            published.add(version)
            if n % 2:  # half picked up by the watcher, half on the admin call
                _wait_for(functools.partial(_serving, base, version), "the watcher")
            else:
                assert admin.post("/api/admin/reload").json()["index_version"] == version
            _wait_for(functools.partial(_grown, results, len(results) + 8), "answers")
        stop.set()
        for c in clients:
            c.join()
        admin.close()

    assert len(published) == 13
    assert results and all(status == 200 for status, _ in results)
    served = {body["index_version"] for _, body in results}
    assert served <= published and len(served) >= 10
    # Each response is whole from one version: its citations are that version's text.
    indexes = {v: load_index(settings.index_dir, v) for v in served}
    for _, body in results:
        documents = indexes[body["index_version"]].documents
        for c in body["citations"]:
            assert documents[c["doc_id"]].text[c["start"]:c["end"]] == c["text"]

"""The served engine's answer cache: reuse per version, bounded, off at size 0."""

from __future__ import annotations

import logging
import time

import pytest

from service.index import store
from service.index.indexing import VECTORS, build_index
from service.qa.engine import Engine
from service.settings import Settings
from tests.conftest import FakeEncoder


def _engine(settings: Settings, encoder: FakeEncoder, size: int) -> Engine:
    engine = Engine(settings.model_copy(update={"cache_size": size}), encoder.model, encoder)
    engine.load()
    return engine


def test_repeated_question_comes_from_the_cache(fake_settings: Settings,
                                                fake_encoder: FakeEncoder) -> None:
    engine = _engine(fake_settings, fake_encoder, 4)
    snap = engine.snapshot
    assert engine.cached(snap, "Who chairs the board?", 3) is None
    first = engine.ask(snap, "Who chairs the board?", 3)
    # Whitespace does not make a new question; top_k does.
    assert engine.cached(snap, "  Who chairs   the board? ", 3) is first
    assert engine.ask(snap, "Who chairs the board?", 3) is first
    assert engine.cached(snap, "Who chairs the board?", 2) is None


def test_cache_is_bounded_and_dropped_with_the_version(fake_settings: Settings,
                                                       fake_encoder: FakeEncoder) -> None:
    engine = _engine(fake_settings, fake_encoder, 2)
    snap = engine.snapshot
    for q in ("one product", "two product", "three product"):
        engine.compute(snap, q, 3)
    assert engine.cached(snap, "one product", 3) is None, "the oldest answer was evicted"
    assert engine.cached(snap, "three product", 3) is not None
    (fake_settings.corpus_dir / "new.txt").write_text("A new note.", "utf-8")
    build_index(fake_settings, encoder=fake_encoder)
    assert engine.reload_if_changed()
    assert engine.cached(engine.snapshot, "three product", 3) is None


def test_size_zero_turns_the_cache_off(fake_settings: Settings,
                                       fake_encoder: FakeEncoder) -> None:
    engine = _engine(fake_settings, fake_encoder, 0)
    snap = engine.snapshot
    engine.ask(snap, "Who chairs the board?", 3)
    assert engine.cached(snap, "Who chairs the board?", 3) is None


def _small_big_files(monkeypatch: pytest.MonkeyPatch) -> None:
    # Files over 1 KiB count as big, and their samples are two 16-byte blocks (first, last):
    # a byte flipped in the middle passes the quick check and only the full one finds it.
    monkeypatch.setattr(store, "FULL_CHECK_BYTES", 1024)
    monkeypatch.setattr(store, "SAMPLE_BLOCKS", 2)
    monkeypatch.setattr(store, "SAMPLE_BYTES", 16)


def test_big_files_are_checked_in_full_after_loading(
        fake_settings: Settings, fake_encoder: FakeEncoder,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _small_big_files(monkeypatch)
    (fake_settings.corpus_dir / "new.txt").write_text("A new note.", "utf-8")
    build_index(fake_settings, encoder=fake_encoder)
    version = store.current_version(fake_settings.index_dir)
    folder = fake_settings.index_dir / "versions" / str(version)
    manifest = store.read_manifest(folder)
    assert VECTORS in store.deferred(manifest)
    vectors = folder / VECTORS
    data = bytearray(vectors.read_bytes())
    data[len(data) // 2] ^= 0x04
    vectors.write_bytes(bytes(data))
    engine = Engine(fake_settings, fake_encoder.model, fake_encoder)
    engine.load()  # size and samples match: served at once
    deadline = time.monotonic() + 10
    while engine.ready and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not engine.ready, "the full check in the background stops serving it"
    assert not engine.reload_if_changed(), "and the refused version is not loaded again"


def test_intact_big_files_keep_being_served(
        fake_settings: Settings, fake_encoder: FakeEncoder,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _small_big_files(monkeypatch)
    (fake_settings.corpus_dir / "new.txt").write_text("A new note.", "utf-8")
    build_index(fake_settings, encoder=fake_encoder)
    caplog.set_level(logging.INFO, "service.qa.engine")
    engine = Engine(fake_settings, fake_encoder.model, fake_encoder)
    engine.load()
    deadline = time.monotonic() + 10
    while "match their checksums" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "match their checksums" in caplog.text
    assert engine.ready

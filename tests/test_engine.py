"""The served engine's answer cache: reuse per version, bounded, off at size 0."""

from __future__ import annotations

from service.engine import Engine
from service.indexing import build_index
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

"""Shared fixtures: a fast fake encoder, and the shipped corpus indexed with the real model."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.encoder import ModelInfo, OnnxEncoder, describe_model
from service.indexing import build_index, encoder_folder, open_encoder
from service.settings import Settings
from tests.fakes import FakeEncoder as FakeEncoder  # re-exported for the test modules

ROOT = Path(__file__).resolve().parent.parent
SEED_CORPUS = ROOT / "corpus"


class TooSlow(AssertionError):
    """A call on hostile input outran its (generous) time limit: not linear time."""


@contextlib.contextmanager
def _within(seconds: float) -> Iterator[None]:
    # SIGALRM interrupts even a backtracking regex (the re engine checks for signals), so a
    # call that would run for hours fails the test instead of hanging the suite.
    def expire(signum: int, frame: object) -> None:
        raise TooSlow(f"took over {seconds:g} s on hostile input")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def within() -> Callable[[float], contextlib.AbstractContextManager[None]]:
    """`with within(1.0): f(hostile)` fails when f takes longer; limits are generous, so this
    checks for super-linear blow-ups, not speed."""
    return _within


@pytest.fixture(scope="session", autouse=True)
def clean_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No `QA_*` variable of the caller's shell reaches the suite, and the answer store of any
    app a test builds lives in a temporary folder, never in the repository's data/."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("QA_")]:
            patch.delenv(name)
        patch.setenv("QA_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        yield


@pytest.fixture
def fake_encoder() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    """A writable copy of the shipped corpus."""
    target = tmp_path / "corpus"
    shutil.copytree(SEED_CORPUS, target)
    return target


@pytest.fixture
def fake_settings(tmp_path: Path, corpus_dir: Path, fake_encoder: FakeEncoder) -> Settings:
    """Settings with an index of the shipped corpus built by the fake encoder."""
    settings = Settings(corpus_dir=corpus_dir, index_dir=tmp_path / "index", rate_limit=0,
                        data_dir=tmp_path / "data")
    build_index(settings, encoder=fake_encoder)
    return settings


@pytest.fixture
def fake_client(fake_settings: Settings, fake_encoder: FakeEncoder) -> Iterator[TestClient]:
    with TestClient(create_app(fake_settings, encoder=fake_encoder)) as client:
        yield client


@pytest.fixture(scope="session")
def real_model() -> ModelInfo:
    return describe_model(None)


@pytest.fixture(scope="session")
def real_encoder_dir(tmp_path_factory: pytest.TempPathFactory, real_model: ModelInfo) -> Path:
    """One ONNX export of the packaged model for the whole session (export takes seconds)."""
    index_dir = tmp_path_factory.mktemp("real-index")
    settings = Settings(corpus_dir=SEED_CORPUS, index_dir=index_dir)
    open_encoder(settings, real_model, threads=2)
    return encoder_folder(index_dir, OnnxEncoder.kind, real_model)


@pytest.fixture(scope="session")
def real_settings(real_encoder_dir: Path) -> Settings:
    """The shipped corpus indexed with the real packaged model, as `make index` does."""
    index_dir = real_encoder_dir.parent.parent
    settings = Settings(corpus_dir=SEED_CORPUS, index_dir=index_dir, rate_limit=0, cache_size=0)
    build_index(settings)
    return settings


@pytest.fixture(scope="session")
def real_client(real_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(real_settings)) as client:
        yield client

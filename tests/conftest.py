"""Shared fixtures: a fast fake encoder, and the shipped corpus indexed with the real model."""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.encoder import ModelInfo, OnnxEncoder, describe_model
from service.indexing import build_index, encoder_folder, open_encoder
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SEED_CORPUS = ROOT / "corpus"
SHARED = ROOT.parent / "shared"

Span = tuple[int, int]


class FakeEncoder:
    """Hashed bag of words: deterministic, instant, same interface as the real encoders."""

    kind = "fake"

    def __init__(self, dimension: int = 64) -> None:
        self.model = ModelInfo("fake", Path("/nonexistent"), "fake0000", dimension, 256)
        self.calls = 0

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.model.dimension, dtype=np.float32)
        for word in re.findall(r"\w+", text.lower()):
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
            v[h % self.model.dimension] += 1.0
        n = np.linalg.norm(v)
        return v / n if n else v

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._vector(t) for t in texts])

    def encode_passages(
        self, texts: Sequence[str], spans: Sequence[Sequence[Span]], batch_size: int = 32
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        self.calls += len(texts)
        vectors = self.encode_queries(texts) if texts else np.zeros((0, self.model.dimension))
        per_span = [
            np.stack([self._vector(t[s:e]) for s, e in sp]).astype(np.float32)
            if sp else np.zeros((0, self.model.dimension), np.float32)
            for t, sp in zip(texts, spans, strict=True)
        ]
        return vectors.astype(np.float32), per_span


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
    settings = Settings(corpus_dir=corpus_dir, index_dir=tmp_path / "index", rate_limit=0)
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

"""A deterministic fake encoder, importable without pytest (fault tests run it in subprocesses)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.index.encoder import ModelInfo

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
        self, texts: Sequence[str], spans: Sequence[Sequence[Span]], batch_size: int = 32,
        done: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        self.calls += len(texts)
        vectors = self.encode_queries(texts) if texts else np.zeros((0, self.model.dimension))
        per_span = [
            np.stack([self._vector(t[s:e]) for s, e in sp]).astype(np.float32)
            if sp else np.zeros((0, self.model.dimension), np.float32)
            for t, sp in zip(texts, spans, strict=True)
        ]
        if done:
            done(len(texts))
        return vectors.astype(np.float32), per_span


def fake_app() -> Any:
    """`uvicorn --factory tests.fakes:fake_app`: the real app, settings from the environment,
    the fake encoder (for tests that need a real server and real sockets)."""
    from service.app import create_app

    return create_app(encoder=FakeEncoder())

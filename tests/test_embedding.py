"""Embedding over worker processes: the same vectors as one process, every passage once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.index import embedding
from service.index.encoder import ModelInfo, OnnxEncoder, plan_batches

PASSAGES = [f"Passage {n}: the committee meets on day {n % 7} to review "
            f"{' and '.join(['budgets'] * (n % 9 + 1))}. Minutes are kept." for n in range(40)]
SPANS = [[(0, len(p) // 2), (len(p) // 2 + 1, len(p))] for p in PASSAGES]


def test_processes_give_the_vectors_of_one_process(real_encoder_dir: Path,
                                                   real_model: ModelInfo) -> None:
    here = OnnxEncoder(real_encoder_dir, real_model, threads=1)
    vectors, sentences = here.encode_passages(PASSAGES, SPANS)
    seen: list[int] = []
    far, far_sentences = embedding.encode_all(real_encoder_dir, real_model, PASSAGES, SPANS, 2,
                                              done=seen.append)
    assert sum(seen) == len(PASSAGES)
    assert np.array_equal(vectors, far)
    assert all(np.array_equal(a, b) for a, b in zip(sentences, far_sentences, strict=True))
    assert [s.shape for s in far_sentences] == [(2, real_model.dimension)] * len(PASSAGES)


def test_only_the_given_batches_are_encoded(real_encoder_dir: Path,
                                                 real_model: ModelInfo) -> None:
    batches = plan_batches(PASSAGES)
    assert len(batches) > 2
    chosen = batches[1::2]
    seen: list[int] = []

    def keep(batch: list[int], pooled: np.ndarray, sentences: list[np.ndarray]) -> None:
        assert batch in chosen and len(pooled) == len(sentences) == len(batch)
        assert np.allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-3)
        seen.extend(batch)

    embedding.encode_batches(real_encoder_dir, real_model, PASSAGES, SPANS, chosen, 2, keep)
    assert sorted(seen) == sorted(i for b in chosen for i in b)  # each chosen passage once


@pytest.mark.parametrize(("requested", "passages", "expected"), [
    (4, 100, 1), (4, 3 * embedding.MIN_PER_PROCESS, 3), (2, 10 * embedding.MIN_PER_PROCESS, 2),
    (1, 10 * embedding.MIN_PER_PROCESS, 1)])
def test_process_count(requested: int, passages: int, expected: int) -> None:
    assert embedding.process_count(requested, passages) == expected


def test_process_count_defaults_to_the_cores() -> None:
    import os

    cores = len(os.sched_getaffinity(0))
    assert embedding.process_count(0, 10_000 * embedding.MIN_PER_PROCESS) == cores

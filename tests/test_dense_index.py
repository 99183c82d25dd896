"""The dense index chosen by size (exact, then HNSW), recorded in the manifest, set up at load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from service.index import indexing, lexical
from service.index.indexing import build_index, dense_index
from service.qa.retrieval import load_index, retrieve
from service.settings import Settings
from tests.conftest import FakeEncoder


def _clustered(n: int, dimension: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(2, n // 20), dimension)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)]
    x = x + 0.3 * rng.standard_normal(x.shape).astype(np.float32)
    unit: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return unit


def test_small_sets_get_exact_search() -> None:
    vectors = _clustered(200)
    index, record = dense_index(vectors, flat_max=200)
    assert record == {"dense_index": "flat-ip"}
    scores, ids = index.search(vectors[:5], 3)
    assert list(ids[:, 0]) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-5)


def test_large_sets_get_hnsw_with_good_recall() -> None:
    vectors, queries = _clustered(3000), _clustered(50, seed=1)
    threads = faiss.omp_get_max_threads()
    index, record = dense_index(vectors, threads=2, flat_max=1000)
    assert faiss.omp_get_max_threads() == threads, "the process-wide thread count is restored"
    assert record == {"dense_index": "hnsw", "dense_params": {
        "M": indexing.HNSW_M, "efConstruction": indexing.HNSW_EF_CONSTRUCTION,
        "efSearch": indexing.HNSW_EF_SEARCH}}
    graph: Any = faiss.downcast_index(index)
    assert graph.hnsw.efSearch == indexing.HNSW_EF_SEARCH
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(queries, 10)
    _, found = index.search(queries, 10)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.95


def corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(30):
        (corpus / f"note{i}.txt").write_text(
            f"Note {i} is about budgets. The treasurer manages budget number {i}. "
            f"Teams meet on day {i % 7} to plan products.", "utf-8")
    return corpus


def test_build_records_hnsw_and_load_sets_ef_search(tmp_path: Path, fake_encoder: FakeEncoder,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(indexing, "FLAT_MAX", 10)
    monkeypatch.setattr(indexing, "HNSW_EF_SEARCH", 77)
    settings = Settings(corpus_dir=corpus(tmp_path), index_dir=tmp_path / "index")
    build_index(settings, encoder=fake_encoder)
    index = load_index(settings.index_dir)
    assert index.manifest["dense_index"] == "hnsw"
    assert index.manifest["dense_params"]["efSearch"] == 77
    graph: Any = faiss.downcast_index(index.dense)
    assert graph.hnsw.efSearch == 77
    question = "Who manages budget number 12?"
    hits = retrieve(index, fake_encoder.encode_queries([question])[0], lexical.terms(question), 3)
    assert index.chunks[hits[0].chunk].doc_id == "note12.txt"


def test_default_build_is_exact(tmp_path: Path, fake_encoder: FakeEncoder) -> None:
    settings = Settings(corpus_dir=corpus(tmp_path), index_dir=tmp_path / "index")
    build_index(settings, encoder=fake_encoder)
    index = load_index(settings.index_dir)
    assert index.manifest["dense_index"] == "flat-ip"
    assert "dense_params" not in index.manifest


def test_large_hnsw_searches_wider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(indexing, "HNSW_LARGE", 500)
    small, small_record = dense_index(_clustered(400), flat_max=100)
    large, large_record = dense_index(_clustered(600), flat_max=100)
    assert small_record["dense_params"]["efSearch"] == indexing.HNSW_EF_SEARCH
    assert large_record["dense_params"]["efSearch"] == indexing.HNSW_EF_SEARCH_LARGE
    graph: Any = faiss.downcast_index(large)
    assert graph.hnsw.efSearch == indexing.HNSW_EF_SEARCH_LARGE

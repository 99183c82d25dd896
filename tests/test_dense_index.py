"""The dense index chosen by size (exact, HNSW, then IVF-PQ), recorded in the manifest, set up
at load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from service.index import indexing, lexical
from service.index.indexing import build_index, dense_index
from service.qa import retrieval
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


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t)
                          for f, t in zip(found, truth, strict=True)]))


def test_huge_sets_get_ivf_pq_and_its_shape_follows_the_size() -> None:
    vectors = _clustered(3000)
    index, record = dense_index(vectors, flat_max=100, ivfpq_min=3000)
    lists, subquantizers, _ = indexing.ivf_pq_shape(3000, 32)
    assert record == {"dense_index": "ivf-pq", "dense_params": {
        "lists": lists, "subquantizers": subquantizers, "bits": indexing.IVFPQ_BITS,
        "nprobe": indexing.IVFPQ_NPROBE, "refine": indexing.IVFPQ_REFINE}}
    inverted: Any = faiss.downcast_index(index)
    assert index.ntotal == 3000 and inverted.nprobe == indexing.IVFPQ_NPROBE
    # About 4 sqrt(n) lists as a power of two, one sub-quantizer per 8 dimensions, and never
    # fewer than 39 training vectors per centroid.
    assert indexing.ivf_pq_shape(10_000_000, 384)[:2] == (16384, 48)
    assert indexing.ivf_pq_shape(1_000_000, 384)[:2] == (4096, 48)
    for n in (3000, 20_000, 1_000_000):
        lists, _, train = indexing.ivf_pq_shape(n, 384)
        assert train <= n and train >= min(n, 39 * lists)
        assert lists & (lists - 1) == 0


def test_ivf_pq_candidates_are_rescored_exactly(tmp_path: Path, fake_encoder: FakeEncoder,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Through the builder and the loader, with codes small enough for 30 passages.
    monkeypatch.setattr(indexing, "FLAT_MAX", 5)
    monkeypatch.setattr(indexing, "IVFPQ_MIN", 10)
    monkeypatch.setattr(indexing, "IVFPQ_BITS", 4)
    settings = Settings(corpus_dir=corpus(tmp_path), index_dir=tmp_path / "index")
    build_index(settings, encoder=fake_encoder)
    index = load_index(settings.index_dir)
    assert index.manifest["dense_index"] == "ivf-pq"
    inverted: Any = faiss.downcast_index(index.dense)
    assert inverted.nprobe == indexing.IVFPQ_NPROBE
    queries = fake_encoder.encode_queries([f"Who manages budget number {i}?" for i in range(30)])
    exact = index.vectors @ queries.T
    for column, query in enumerate(queries):
        found = retrieval.dense_candidates(index, query, 5)
        # Refined: in exact order, and the true nearest first (the coarse codes alone need not).
        # Within float32 rounding: the matrix product here and retrieval's one-question product
        # may differ in the last place, and the fake vectors tie (several passages at 1/sqrt(5)).
        scores = exact[found, column]
        assert all(a >= b - 1e-6 for a, b in zip(scores, scores[1:], strict=False))
        assert scores[0] >= float(exact[:, column].max()) - 1e-6
    question = "Who manages budget number 12?"
    hits = retrieve(index, fake_encoder.encode_queries([question])[0], lexical.terms(question), 3)
    assert index.chunks[hits[0].chunk].doc_id == "note12.txt"


def test_refined_ivf_pq_keeps_recall_where_codes_alone_lose_it() -> None:
    # As retrieval asks: 50 candidates, of which the first 10 are compared with exact search.
    vectors, queries = _clustered(4000, dimension=64), _clustered(60, dimension=64, seed=1)
    index, record = dense_index(vectors, flat_max=100, ivfpq_min=4000)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(queries, 10)
    _, coarse = index.search(queries, 10)
    refined = np.stack([retrieval.refined_search(index, vectors, q, 50,
                                                 record["dense_params"]["refine"])[:10]
                        for q in queries])
    assert _recall(refined, truth) >= 0.95
    assert _recall(coarse, truth) < 0.8


def test_very_large_sets_keep_8_bit_codes_in_the_graph(
        tmp_path: Path, fake_encoder: FakeEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(indexing, "HNSW_CODES_OVER", 1000)
    vectors, queries = _clustered(3000), _clustered(50, seed=1)
    index, record = dense_index(vectors, flat_max=1000)
    assert record["dense_params"]["codes"] == "sq8"
    assert record["dense_params"]["efSearch"] == indexing.HNSW_EF_SEARCH_CODES
    graph: Any = faiss.downcast_index(index)
    assert isinstance(graph, faiss.IndexHNSWSQ)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(queries, 10)
    _, found = index.search(queries, 50)
    # Retrieval scores the 50 candidates with the float vectors.
    top = [f[np.argsort(-(vectors[f] @ q))][:10] for f, q in zip(found, queries, strict=True)]
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(top, truth, strict=True)])
    assert recall >= 0.95
    # Written, mapped back and searched by the service.
    monkeypatch.setattr(indexing, "FLAT_MAX", 10)
    monkeypatch.setattr(indexing, "HNSW_CODES_OVER", 10)
    settings = Settings(corpus_dir=corpus(tmp_path), index_dir=tmp_path / "index")
    build_index(settings, encoder=fake_encoder)
    served = load_index(settings.index_dir)
    assert isinstance(faiss.downcast_index(served.dense), faiss.IndexHNSWSQ)
    question = "Who manages budget number 12?"
    hits = retrieve(served, fake_encoder.encode_queries([question])[0], lexical.terms(question), 3)
    assert served.chunks[hits[0].chunk].doc_id == "note12.txt"

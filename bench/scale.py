"""Dense search at scale: exact (flat) against HNSW on 100k and 1M SciFact-derived vectors.

Random vectors are the worst case for a graph index and nothing like text embeddings, so the
base vectors are SciFact passage vectors, each jittered to cosine ~0.8 with its source; the
queries are real SciFact claims encoded by the service's encoder.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import faiss
import numpy as np

from service.index.indexing import dense_index

K = 10


def derived_vectors(seeds: np.ndarray, n: int, rng: np.random.Generator,
                    noise: float = 0.04) -> np.ndarray:
    """`n` unit vectors, each a seed vector plus Gaussian noise (per-dimension sd `noise`)."""
    out = np.empty((n, seeds.shape[1]), dtype=np.float32)
    step = 100_000
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        block = seeds[rng.integers(0, len(seeds), hi - lo)]
        block = block + noise * rng.standard_normal(block.shape, dtype=np.float32)
        out[lo:hi] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def _query_ms(index: Any, queries: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Median single-query latency at one thread, and the ids found."""
    faiss.omp_set_num_threads(1)
    times, found = [], []
    for q in queries:
        started = time.perf_counter()
        _, ids = index.search(q.reshape(1, -1), k)
        times.append(time.perf_counter() - started)
        found.append(ids[0])
    return round(float(np.median(times)) * 1000, 3), np.stack(found)


def recall(found: np.ndarray, truth: np.ndarray, k: int = K) -> float:
    hits = sum(len(set(f[:k]) & set(t[:k])) for f, t in zip(found, truth, strict=True))
    return round(hits / (k * len(truth)), 4)


def measure(vectors: np.ndarray, queries: np.ndarray, flat_queries: int = 50,
            build_threads: int = 2) -> dict[str, Any]:
    """Flat and HNSW (the service's parameters) on these vectors: build time, query p50 and
    recall@10 against exact search; plus recall and p50 across efSearch values."""
    n = len(vectors)
    faiss.omp_set_num_threads(build_threads)
    started = time.perf_counter()
    flat, _ = dense_index(vectors, threads=build_threads, flat_max=n)
    flat_build = time.perf_counter() - started
    faiss.omp_set_num_threads(build_threads)
    _, truth = flat.search(queries, K)  # batched ground truth, BLAS on every thread
    flat_ms, flat_found = _query_ms(flat, queries[:flat_queries], K)
    del flat
    gc.collect()
    started = time.perf_counter()
    hnsw, record = dense_index(vectors, threads=build_threads, flat_max=0)
    hnsw_build = time.perf_counter() - started
    graph = faiss.downcast_index(hnsw).hnsw
    chosen = int(record["dense_params"]["efSearch"])
    sweep = {}
    for ef in sorted({32, 64, 128, 256, chosen}):
        graph.efSearch = ef
        ms, found = _query_ms(hnsw, queries, K)
        sweep[str(ef)] = {"p50_ms": ms, "recall@10": recall(found, truth)}
    del hnsw
    gc.collect()
    return {
        "vectors": n,
        "flat": {"build_s": round(flat_build, 2), "p50_ms": flat_ms,
                 "recall@10": recall(flat_found, truth[:flat_queries])},
        "hnsw": {"build_s": round(hnsw_build, 1), **record["dense_params"],
                 "p50_ms": sweep[str(chosen)]["p50_ms"],
                 "recall@10": sweep[str(chosen)]["recall@10"], "by_efSearch": sweep},
    }


def crossover(seeds: np.ndarray, queries: np.ndarray, sizes: tuple[int, ...],
              rng: np.random.Generator) -> dict[str, float]:
    """Flat single-query p50 by index size: where exact search stops being cheap."""
    out = {}
    for n in sizes:
        flat, _ = dense_index(derived_vectors(seeds, n, rng), threads=1, flat_max=n)
        out[str(n)], _ = _query_ms(flat, queries[:100], 50)
    return out

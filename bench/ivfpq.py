"""The compressed dense index (IVF-PQ with exact re-scoring) against exact search:
`.venv/bin/python bench/ivfpq.py --index SCIFACT_INDEX [--vectors N]` (not in `make bench`:
training takes minutes). Prints JSON.

The builder picks IVF-PQ from `IVFPQ_MIN` (5M) passages; a 5M-vector run needs ~8 GB and an
hour of k-means on two cores, so this measures the same construction (`dense_index` with the
threshold lowered, the shape `ivf_pq_shape` gives for N) on N SciFact-derived vectors (each a
SciFact passage vector plus noise, as bench/scale.py makes them) with 200 real SciFact claims
encoded by the service's encoder. For each nprobe and refine factor: recall@10 of the first
10 of retrieval's 50 candidates against exact search, and the single-thread p50 of the search
with its re-scoring from the vectors (as `retrieval.refined_search` does it). Also: build time,
and the bytes the index keeps in memory per vector against HNSW's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from bench.scale import derived_vectors  # noqa: E402
from service.index import indexing  # noqa: E402
from service.index.encoder import OnnxEncoder, describe_model, export_onnx  # noqa: E402
from service.qa.retrieval import load_index, refined_search  # noqa: E402

SCIFACT = ROOT.parent / "shared" / "eval" / "scifact"
K, CANDIDATES = 10, 50


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", type=Path, required=True,
                        help="an index folder of SciFact (e.g. make eval's --work scifact-index)")
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    seeds = np.asarray(load_index(args.index).vectors, dtype=np.float32)
    model = describe_model(None)
    with tempfile.TemporaryDirectory(prefix="qa-ivfpq-") as tmp:
        export_onnx(model, Path(tmp))
        encoder = OnnxEncoder(Path(tmp), model, args.threads)
        texts = [json.loads(line)["text"] for line in
                 (SCIFACT / "queries_train.jsonl").read_text("utf-8").splitlines()][:200]
        queries = encoder.encode_queries(texts)
        del encoder
    rng = np.random.default_rng(6)
    vectors = derived_vectors(seeds, args.vectors, rng)
    faiss.omp_set_num_threads(args.threads)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(queries, K)
    del exact
    started = time.perf_counter()
    index, record = indexing.dense_index(vectors, args.threads, flat_max=0,
                                         ivfpq_min=args.vectors)
    build_s = time.perf_counter() - started
    inverted: Any = faiss.downcast_index(index)
    faiss.omp_set_num_threads(1)
    sweep: dict[str, Any] = {}
    for nprobe in (16, 32, 64, 128):
        inverted.nprobe = nprobe
        for refine in (1, 2, 4, 8):
            found, times = [], []
            for q in queries:
                t0 = time.perf_counter()
                ids = refined_search(index, vectors, q, CANDIDATES, refine)
                times.append((time.perf_counter() - t0) * 1000)
                found.append(ids[:K])
            hits = sum(len(set(t) & set(f.tolist())) for t, f in
                       zip(truth.tolist(), found, strict=True))
            key = f"nprobe={nprobe} refine={refine}"
            sweep[key] = {"recall@10": round(hits / (K * len(queries)), 4),
                          "p50_ms": round(float(np.median(times)), 3)}
            print(key, sweep[key], file=sys.stderr, flush=True)
    params = record["dense_params"]
    codes = inverted.code_size + 8  # a code and its id in the inverted lists
    figures = {"vectors": args.vectors, "seed_vectors": len(seeds), "queries": len(queries),
               **params, "build_s": round(build_s, 1),
               "chosen": sweep[f"nprobe={params['nprobe']} refine={params['refine']}"],
               "memory_bytes_per_vector": {"ivf-pq": codes,
                                           "hnsw (graph links, vectors mapped)":
                                               indexing.HNSW_M * 2 * 4,
                                           "full vectors (float32, mapped)": 4 * vectors.shape[1]},
               "by_setting": sweep}
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()

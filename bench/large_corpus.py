"""A real index of a million passages: `.venv/bin/python bench/large_corpus.py` (about half an
hour and ~10 GB of disk; `--passages 100000` for a quick run; `--work DIR` keeps the folder,
and `--work DIR --reuse` measures its index again, steps 4-5 only). Not part of `make bench`.

1. Writes a synthetic corpus: .jsonl files of documents whose paragraphs are sentences of
   pseudo-words drawn from a Zipf-distributed vocabulary (so BM25 sees common and rare terms
   as in real text), each paragraph short enough to be one passage.
2. Embeds a sample of real text (3,000 SciFact passages of up to 700 characters: pseudo-words
   would split into many more tokens than text does) with the real encoder (ONNX int8), in
   one process and over all cores, and extrapolates the time the corpus would take.
3. Builds and publishes the index with the real builder (`build_index`: chunking, lexical
   index, term sets, arrays, FAISS, manifest), except that passage and sentence vectors come
   from a cheaper method than the model: each passage's vector mixes two vectors of the
   embedded sample (0.7 and 0.3) plus Gaussian noise, each sentence's is its passage's plus
   more noise, all unit length. Those stand in for the model's in the index's files (they
   have real embeddings' geometry, not the synthetic text's meaning).
4. Dense recall@10 of the index the builder chose, against exact search, for 200 SciFact
   claims encoded by the real encoder.
5. Starts the service on it as `make serve` does and reports the cold start (process start to
   /readyz 200, index files in the page cache after the build), the answer time in-process
   without encoding (the real Snapshot.ask with the question's vector computed beforehand),
   `/api/ask` over HTTP at concurrency 1 with encoding, the bare encoder, and memory; and the
   cold start of the same command on the shipped one-article corpus, for the machine's
   baseline at the time (imports and the ONNX session, which no index size changes).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from bench.http_load import percentiles, post, sequential  # noqa: E402
from bench.server import Server  # noqa: E402
from service.index import embedding, lexical, store  # noqa: E402
from service.index.encoder import ModelInfo, OnnxEncoder, Span, describe_model, export_onnx  # noqa: E402
from service.index.indexing import build_index, encoder_folder  # noqa: E402
from service.ingest.chunking import split  # noqa: E402
from service.ingest.corpus import Document  # noqa: E402
from service.qa.engine import Snapshot  # noqa: E402
from service.qa.retrieval import CANDIDATES, load_index  # noqa: E402
from service.settings import Settings  # noqa: E402

SCIFACT = ROOT.parent / "shared" / "eval" / "scifact"
VOCABULARY = 60_000
PASSAGES_PER_DOCUMENT = 5  # paragraphs; the chunker joins short ones
DOCUMENTS_PER_FILE = 20_000
SAMPLE = 3_000  # passages embedded by the real model
QUESTIONS = 200
K = 10
SYLLABLES = ("ba be bi bo bu ka ke ki ko ku da de di do du fa fe fi fo fu ga ge gi go gu la le "
             "li lo lu ma me mi mo mu na ne ni no nu pa pe pi po pu ra re ri ro ru sa se si so "
             "su ta te ti to tu va ve vi vo vu za ze zi zo zu").split()


def vocabulary(rng: np.random.Generator) -> list[str]:
    words: set[str] = set()
    while len(words) < VOCABULARY:
        parts = rng.integers(0, len(SYLLABLES), rng.integers(2, 5))
        words.add("".join(SYLLABLES[p] for p in parts))
    return sorted(words)


class TextMaker:
    """Sentences of Zipf-distributed pseudo-words, made in bulk."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.words = vocabulary(rng)
        ranks = np.arange(1, VOCABULARY + 1, dtype=np.float64)
        weights = 1.0 / ranks**1.07
        self.cdf = np.cumsum(weights / weights.sum())

    def document(self, paragraphs: int) -> str:
        """`paragraphs` paragraphs of 3-5 sentences of 7-14 words, drawn in one go."""
        counts = self.rng.integers(3, 6, paragraphs)
        lengths = self.rng.integers(7, 15, int(counts.sum()))
        ids = np.minimum(np.searchsorted(self.cdf, self.rng.random(int(lengths.sum()))),
                         VOCABULARY - 1).tolist()
        sentences, at = [], 0
        for n in lengths.tolist():
            words = [self.words[i] for i in ids[at : at + n]]
            at += n
            sentences.append(words[0].capitalize() + " " + " ".join(words[1:]) + ".")
        out, at = [], 0
        for c in counts.tolist():
            out.append(" ".join(sentences[at : at + c]))
            at += c
        return "\n\n".join(out)


def chunks_per_document(maker: TextMaker) -> float:
    """How many passages the chunker makes of one synthetic document, on average."""
    texts = [maker.document(PASSAGES_PER_DOCUMENT) for _ in range(200)]
    return sum(len(split(Document(f"d{i}", "", t), 700)) for i, t in enumerate(texts)) / 200


def write_corpus(folder: Path, passages: int, maker: TextMaker) -> int:
    folder.mkdir(parents=True)
    documents = int(passages / chunks_per_document(maker)) + 1
    for first in range(0, documents, DOCUMENTS_PER_FILE):
        with (folder / f"part-{first // DOCUMENTS_PER_FILE:04d}.jsonl").open("w") as fh:
            for d in range(first, min(documents, first + DOCUMENTS_PER_FILE)):
                text = maker.document(PASSAGES_PER_DOCUMENT)
                fh.write(json.dumps({"id": f"doc-{d}", "title": f"Record {d}",
                                     "text": text}) + "\n")
    return documents


class AnonymousPeak:
    """The highest anonymous resident memory (RssAnon) of this process while in the block,
    sampled every 0.2 s."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak_mb = max(self.peak_mb, round(int(line.split()[1]) / 1024))

    def __enter__(self) -> AnonymousPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class MixedVectors:
    """An Encoder for the builder whose passage vectors are made from the sample's real
    vectors (see the module's docstring); it answers as the ONNX encoder, so the service
    opens the index with the real one."""

    kind = OnnxEncoder.kind

    def __init__(self, model: ModelInfo, sample: np.ndarray, seed: int) -> None:
        self.model = model
        self.sample = sample
        self.rng = np.random.default_rng(seed)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError("the bench encodes questions with the real encoder")

    def encode_passages(self, texts: Sequence[str], spans: Sequence[Sequence[Span]],
                        batch_size: int = 32, done: Callable[[int], None] | None = None,
                        ) -> tuple[np.ndarray, list[np.ndarray]]:
        n, dim = len(texts), self.model.dimension
        a = self.sample[self.rng.integers(0, len(self.sample), n)]
        b = self.sample[self.rng.integers(0, len(self.sample), n)]
        vectors = 0.7 * a + 0.3 * b + 0.03 * self.rng.standard_normal((n, dim), np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        sizes = [len(s) for s in spans]
        rows = np.repeat(vectors, sizes, axis=0)
        rows += 0.05 * self.rng.standard_normal(rows.shape, np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        sentences = np.split(rows.astype(np.float32), np.cumsum(sizes)[:-1])
        if done:
            done(n)
        return vectors.astype(np.float32), sentences


class KnownVectors:
    """The encoder of the in-process measurement: questions' vectors computed beforehand."""

    kind = OnnxEncoder.kind

    def __init__(self, model: ModelInfo, vectors: dict[str, np.ndarray]) -> None:
        self.model = model
        self.vectors = vectors

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])

    def encode_passages(self, texts: Sequence[str], spans: Sequence[Sequence[Span]],
                        batch_size: int = 32, done: Callable[[int], None] | None = None,
                        ) -> tuple[np.ndarray, list[np.ndarray]]:
        raise NotImplementedError


def scifact_passages(n: int) -> list[str]:
    out = []
    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            out.append(f"{record.get('title', '')}\n{record['text']}"[:700])
            if len(out) == n:
                break
    return out


def scifact_claims(n: int) -> list[str]:
    lines = (SCIFACT / "queries_train.jsonl").read_text("utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines[:n]]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--passages", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=SAMPLE,
                        help="passages embedded by the real model (for the time and vectors)")
    parser.add_argument("--work", type=Path, help="folder to build in (default: a temporary "
                        "one, removed at the end)")
    parser.add_argument("--reuse", action="store_true", help="measure the index already "
                        "published in --work (steps 4-5 only)")
    args = parser.parse_args(argv)
    if args.reuse and args.work is None:
        parser.error("--reuse needs --work")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-large-"))
    figures: dict[str, Any] = {"passages_asked": args.passages}
    rng = np.random.default_rng(7)
    try:
        corpus, index_dir = work / "corpus", work / "index"
        model = describe_model(None)
        folder = encoder_folder(index_dir, OnnxEncoder.kind, model)
        if args.reuse:
            figures["reused"] = str(work)
        else:
            build(args, work, figures, rng, model, folder)
        one = OnnxEncoder(folder, model, threads=1)
        version = index_dir / "versions" / str(store.current_version(index_dir))
        manifest = json.loads((version / "manifest.json").read_text())
        figures["build_chunks"] = manifest["chunks"]
        figures["dense_index"] = {"kind": manifest["dense_index"],
                                  "params": manifest.get("dense_params", {})}
        figures["index_gb"] = round(sum(p.stat().st_size for p in version.iterdir()) / 1e9, 2)
        claims = one.encode_queries(scifact_claims(QUESTIONS))
        figures["recall"] = dense_recall(version, manifest, claims)
        print(f"dense recall@{K} against exact search, {len(claims)} SciFact claims: "
              f"{figures['recall']['recall_at_10']} ({figures['dense_index']['kind']}, "
              f"p50 {figures['recall']['p50_ms']} ms a search)", flush=True)

        # Questions of passage words (for BM25), each with a claim's vector (for FAISS).
        questions = make_questions(version, rng)
        figures["in_process"] = in_process(index_dir, model, questions, claims)
        print(f"in-process answer without encoding: p50 {figures['in_process']['p50_ms']} ms "
              f"(CPU {figures['in_process']['cpu_p50_ms']} ms), "
              f"p99 {figures['in_process']['p99_ms']} ms; load_index "
              f"{figures['in_process']['load_s']} s", flush=True)

        figures["service"] = serve(corpus, index_dir, questions, one)
        figures["service"]["baseline_cold_start_s"] = baseline_cold_start(work)
        s = figures["service"]
        print(f"service: cold start {s['cold_start_s']} s; RSS {s['rss_ready_mb']} MB at ready, "
              f"{s['rss_after_mb']} MB after {s['http']['n']} questions; /api/ask p50 "
              f"{s['http']['p50_ms']} ms with encoding (bare encode p50 {s['encode_p50_ms']} "
              f"ms); the same command on the one-article corpus starts in "
              f"{s['baseline_cold_start_s']} s now", flush=True)
        figures["targets"] = {
            "cold_start_le_5s": s["cold_start_s"] <= 5,
            "rss_le_2_5gb": s["rss_after_mb"] <= 2500,
            "ask_p50_without_encoding_le_5ms": figures["in_process"]["p50_ms"] <= 5,
            "recall_ge_0_95": figures["recall"]["recall_at_10"] >= 0.95}
        figures["load_average_end"] = list(os.getloadavg())
        print(json.dumps(figures, indent=2))
        return figures
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def build(args: argparse.Namespace, work: Path, figures: dict[str, Any],
          rng: np.random.Generator, model: ModelInfo, folder: Path) -> None:
    """Steps 1-3: the synthetic corpus, the embedding sample and the published index."""
    started = time.perf_counter()
    maker = TextMaker(rng)
    corpus, index_dir = work / "corpus", work / "index"
    figures["documents"] = write_corpus(corpus, args.passages, maker)
    figures["corpus_mb"] = round(sum(p.stat().st_size for p in corpus.iterdir()) / 1e6, 1)
    figures["write_corpus_s"] = round(time.perf_counter() - started, 1)
    print(f"corpus: {figures['documents']:,} documents, {figures['corpus_mb']} MB "
          f"in {figures['write_corpus_s']} s", flush=True)

    export_onnx(model, folder)
    texts = scifact_passages(args.sample)
    spans = [[(0, len(t))] for t in texts]
    one = OnnxEncoder(folder, model, threads=1)
    t0 = time.perf_counter()
    head = min(1000, len(texts) // 2)
    one.encode_passages(texts[:head], spans[:head])
    one_rate = head / (time.perf_counter() - t0)
    cores = embedding.process_count(0, 10**9)
    t0 = time.perf_counter()
    sample, _ = embedding.encode_all(folder, model, texts, spans, cores)
    all_rate = len(texts) / (time.perf_counter() - t0)
    figures["embedding"] = {
        "sample": len(texts), "one_process_per_s": round(one_rate, 1),
        "all_cores_per_s": round(all_rate, 1), "cores": cores,
        "extrapolated_one_process_h": round(args.passages / one_rate / 3600, 2),
        "extrapolated_all_cores_h": round(args.passages / all_rate / 3600, 2)}
    print(f"embedding, measured on {len(texts):,} passages: {one_rate:.0f}/s in one "
          f"process, {all_rate:.0f}/s over {cores} processes (with start-up) -> "
          f"{args.passages:,} passages would take "
          f"{figures['embedding']['extrapolated_one_process_h']} h / "
          f"{figures['embedding']['extrapolated_all_cores_h']} h", flush=True)

    settings = Settings(corpus_dir=corpus, index_dir=index_dir, max_file_bytes=200_000_000,
                        recording=False)
    t0 = time.perf_counter()
    with AnonymousPeak() as anonymous:
        report = build_index(settings, encoder=MixedVectors(model, sample, 11),
                             progress=lambda line: print(f"  {line}", flush=True))
    # The bench process's peak so far: the build's (the sample's encoders ran in children).
    # RSS counts the pages of the vector files being written (page cache the kernel can write
    # out and drop); the anonymous part is what the build itself holds.
    figures["build"] = {"chunks": report.chunks, "seconds": round(time.perf_counter() - t0),
                        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                             / 1024),
                        "peak_anonymous_mb": anonymous.peak_mb}
    version = index_dir / "versions" / str(report.version)
    manifest = json.loads((version / "manifest.json").read_text())
    figures["dense_index"] = {"kind": manifest["dense_index"],
                              "params": manifest.get("dense_params", {})}
    figures["index_gb"] = round(sum(p.stat().st_size for p in version.iterdir()) / 1e9, 2)
    print(f"built {report.chunks:,} passages in {figures['build']['seconds']} s (vectors "
          f"not from the model), peak RSS {figures['build']['peak_rss_mb']} MB (anonymous "
          f"{figures['build']['peak_anonymous_mb']} MB); "
          f"{figures['index_gb']} GB; dense index {figures['dense_index']}", flush=True)


def make_questions(version: Path, rng: np.random.Generator) -> list[str]:
    """Six to ten words of a random passage each, in their order (the question a reader of
    that passage might type)."""
    index = load_index(version.parent.parent, version.name)
    out = []
    for i in rng.integers(0, len(index.chunks), QUESTIONS):
        words = index.text(int(i)).rstrip(".").split()
        n = min(len(words), int(rng.integers(6, 11)))
        start = int(rng.integers(0, len(words) - n + 1))
        out.append(" ".join(words[start : start + n]) + "?")
    return out


def dense_recall(version: Path, manifest: dict[str, Any], queries: np.ndarray) -> dict[str, Any]:
    vectors = np.load(version / "vectors.npy", mmap_mode="r")
    exact = faiss.IndexFlatIP(vectors.shape[1])
    for lo in range(0, len(vectors), 200_000):
        exact.add(np.ascontiguousarray(vectors[lo : lo + 200_000]))
    _, truth = exact.search(queries, K)
    del exact
    dense = faiss.read_index(str(version / "dense.faiss"), faiss.IO_FLAG_MMAP_IFC)
    if manifest["dense_index"] == "hnsw":
        faiss.downcast_index(dense).hnsw.efSearch = int(manifest["dense_params"]["efSearch"])
    faiss.omp_set_num_threads(1)
    found, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        _, ids = dense.search(q.reshape(1, -1), CANDIDATES)
        times.append((time.perf_counter() - t0) * 1000)
        # As retrieval does: the candidates scored with the float vectors (8-bit codes in the
        # graph order them only roughly).
        row = ids[0][ids[0] >= 0]
        cosines = np.asarray(vectors[row], dtype=np.float32) @ q
        found.append(row[np.argsort(-cosines, kind="stable")][:K])
    hits = sum(len(set(t) & set(f)) for t, f in zip(truth.tolist(), found, strict=True))
    return {"recall_at_10": round(hits / (K * len(queries)), 4),
            "p50_ms": round(float(np.median(times)), 3)}


def in_process(index_dir: Path, model: ModelInfo, questions: list[str],
               qvectors: np.ndarray) -> dict[str, Any]:
    t0 = time.perf_counter()
    index = load_index(index_dir)
    load_s = time.perf_counter() - t0
    snap = Snapshot(index, KnownVectors(model, dict(zip(questions, qvectors, strict=True))))
    for q in questions[:20]:
        snap.ask(q, 3)
    times, cpu = [], []
    for q in questions:
        t0, c0 = time.perf_counter(), time.thread_time()
        snap.ask(q, 3)
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.thread_time() - c0) * 1000)
    terms = [lexical.terms(q) for q in questions]
    t0 = time.perf_counter()
    for t in terms:
        index.lexical.scores(t)
    walk = (time.perf_counter() - t0) * 1000 / len(terms)
    t0 = time.perf_counter()
    for t in terms:
        index.lexical.top(t, CANDIDATES)
    pruned = (time.perf_counter() - t0) * 1000 / len(terms)
    # CPU time of the asking thread: what the answer costs on a core of its own, which a
    # machine shared with other jobs does not give (wall time waits for the core).
    return {**percentiles(times), "cpu_p50_ms": round(float(np.median(cpu)), 3),
            "load_s": round(load_s, 2),
            "bm25_full_walk_ms": round(walk, 3), "bm25_top_ms": round(pruned, 3)}


def baseline_cold_start(work: Path) -> float:
    index_dir = work / "baseline-index"
    build_index(Settings(corpus_dir=ROOT / "corpus", index_dir=index_dir),
                progress=lambda _: None)
    env = {"QA_CORPUS_DIR": str(ROOT / "corpus"), "QA_INDEX_DIR": str(index_dir),
           "QA_RELOAD_INTERVAL": "0", "QA_LOG_LEVEL": "WARNING", "QA_RECORDING": "false"}
    srv = Server(env, extra_args=("--no-access-log",))
    try:
        return round(srv.start(timeout=120), 2)
    finally:
        srv.stop()


def serve(corpus: Path, index_dir: Path, questions: list[str],
          encoder: OnnxEncoder) -> dict[str, Any]:
    env = {"QA_CORPUS_DIR": str(corpus), "QA_INDEX_DIR": str(index_dir), "QA_RATE_LIMIT": "0",
           "QA_RELOAD_INTERVAL": "0", "QA_LOG_LEVEL": "WARNING", "QA_CACHE_SIZE": "0",
           "QA_RECORDING": "false", "QA_MAX_FILE_BYTES": "200000000"}
    srv = Server(env, log=index_dir.parent / "server.log", extra_args=("--no-access-log",))
    try:
        cold = srv.start(timeout=300)
        ready_rss = srv.rss_mb()
        asks = [post("/api/ask", {"question": q, "top_k": 3}) for q in questions]
        http = sequential(srv.port, asks, warmup=20)
        after = srv.memory_mb()
        rss_after = srv.rss_mb()
    finally:
        srv.stop()
    times = []
    for q in questions:
        t0 = time.perf_counter()
        encoder.encode_queries([q])
        times.append((time.perf_counter() - t0) * 1000)
    return {"cold_start_s": round(cold, 2), "rss_ready_mb": ready_rss, "rss_after_mb": rss_after,
            **after, "http": http, "encode_p50_ms": round(float(np.median(times)), 3)}


if __name__ == "__main__":
    main()

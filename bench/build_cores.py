"""SciFact build time on one process against all cores: `.venv/bin/python bench/build_cores.py`.

Builds the SciFact corpus (5,183 documents) from scratch three times, each into a fresh index
folder that shares one exported encoder (the one-off export is not timed):

- one process, one encoder thread (QA_BUILD_PROCESSES=1, QA_BUILD_THREADS=1);
- one process, QA_BUILD_THREADS=2 (the builder before worker processes: two onnxruntime
  sessions on two threads in one interpreter);
- QA_BUILD_PROCESSES=0 (one worker process per core).

Prints each build's wall time, its CPU time (the builder's and its children's, so how many
cores it kept busy) and the load average, and checks the three versions hold the same vectors.

`--embed-only N` measures the embedding step alone on N SciFact passages, the three ways in
alternating rounds (for a machine shared with other work, where whole builds of one
configuration after another would measure the neighbours' load more than the builder).
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
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from service.index import embedding  # noqa: E402
from service.index.encoder import OnnxEncoder, describe_model, export_onnx  # noqa: E402
from service.index.indexing import VECTORS, build_index, encoder_folder  # noqa: E402
from service.settings import Settings  # noqa: E402

SCIFACT = ROOT.parent / "shared" / "eval" / "scifact" / "corpus.jsonl.gz"
CONFIGS = (("1 process, 1 thread", 1, 1), ("1 process, 2 threads (before)", 1, 2),
           ("all cores, processes", 0, 1))


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def one_build(corpus: Path, index: Path, encoders: Path, processes: int,
              threads: int) -> dict[str, Any]:
    shutil.copytree(encoders, index / "encoders")
    settings = Settings(corpus_dir=corpus, index_dir=index, build_processes=processes,
                        build_threads=threads, recording=False)
    load = os.getloadavg()[0]
    cpu, started = cpu_seconds(), time.perf_counter()
    report = build_index(settings, progress=lambda _: None)
    seconds = time.perf_counter() - started
    used = cpu_seconds() - cpu
    return {"processes": processes, "threads": threads, "seconds": round(seconds, 1),
            "chunks": report.chunks, "chunks_per_s": round(report.chunks / seconds, 1),
            "cpu_s": round(used, 1), "cores_busy": round(used / seconds, 2),
            "load_average_before": round(load, 2), "version": report.version}


def embed_only(passages: int, rounds: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    try:
        model = describe_model(None)
        folder = encoder_folder(work, OnnxEncoder.kind, model)
        export_onnx(model, folder)
        texts: list[str] = []
        with gzip.open(SCIFACT, "rt", encoding="utf-8") as fh:
            for line in fh:
                record = json.loads(line)
                texts.append(f"{record.get('title', '')}\n{record['text']}"[:700])
                if len(texts) == passages:
                    break
        spans = [[(0, len(t) // 2), (len(t) // 2, len(t))] for t in texts]
        cores = len(os.sched_getaffinity(0))
        times: dict[str, list[float]] = {name: [] for name, _, _ in CONFIGS}
        results: dict[str, np.ndarray] = {}
        for _ in range(rounds):
            for name, processes, threads in CONFIGS:
                cpu, started = cpu_seconds(), time.perf_counter()
                if processes == 1:
                    vectors, _ = OnnxEncoder(folder, model, threads).encode_passages(texts, spans)
                else:
                    vectors, _ = embedding.encode_all(folder, model, texts, spans, cores)
                seconds = time.perf_counter() - started
                times[name].append(seconds)
                results[name] = vectors
                print(f"  {name}: {seconds:.1f} s ({len(texts) / seconds:.1f} passages/s, "
                      f"{(cpu_seconds() - cpu) / seconds:.2f} cores busy, load "
                      f"{os.getloadavg()[0]:.1f})", flush=True)
        figures: dict[str, Any] = {"passages": len(texts), "cores": cores, "rounds": rounds}
        for name in times:
            figures[name] = round(float(np.median(times[name])), 2)
        base, before, after = (figures[name] for name, _, _ in CONFIGS)
        figures["all_cores_vs_one_thread"] = round(after / base, 3)
        figures["all_cores_vs_two_threads"] = round(after / before, 3)
        first = results[CONFIGS[0][0]]
        figures["same_vectors"] = all(np.array_equal(first, v) for v in results.values())
        print(json.dumps(figures, indent=2))
        return figures
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=1,
                        help="builds per configuration, alternating (median reported)")
    parser.add_argument("--embed-only", type=int, metavar="N",
                        help="time only the embedding of N passages, in alternating rounds")
    args = parser.parse_args(argv)
    if args.embed_only:
        return embed_only(args.embed_only, max(args.rounds, 3))
    work = Path(tempfile.mkdtemp(prefix="bench-build-"))
    try:
        corpus = work / "corpus"
        corpus.mkdir()
        with gzip.open(SCIFACT, "rb") as src, (corpus / "corpus.jsonl").open("wb") as dst:
            shutil.copyfileobj(src, dst)
        model = describe_model(None)
        export_onnx(model, encoder_folder(work / "seed", OnnxEncoder.kind, model))
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in CONFIGS}
        vectors: dict[str, np.ndarray] = {}
        for r in range(args.rounds):
            for name, processes, threads in CONFIGS:
                index = work / f"index-{processes}-{threads}-{r}"
                print(f"building SciFact: {name} ...", flush=True)
                run = one_build(corpus, index, work / "seed" / "encoders", processes, threads)
                runs[name].append(run)
                print(f"  {run['seconds']} s, {run['chunks_per_s']} chunks/s, "
                      f"{run['cores_busy']} cores busy, load before {run['load_average_before']}",
                      flush=True)
                vectors[name] = np.load(index / "versions" / run["version"] / VECTORS)
                shutil.rmtree(index)
        figures: dict[str, Any] = {"cores": len(os.sched_getaffinity(0))}
        for name in runs:
            ordered = sorted(runs[name], key=lambda x: x["seconds"])
            figures[name] = ordered[len(ordered) // 2]
        base = figures[CONFIGS[0][0]]["seconds"]
        before = figures[CONFIGS[1][0]]["seconds"]
        after = figures[CONFIGS[2][0]]["seconds"]
        first = vectors[CONFIGS[0][0]]
        figures["same_vectors"] = all(np.array_equal(first, v) for v in vectors.values())
        figures["all_cores_vs_one_thread"] = round(after / base, 3)
        figures["all_cores_vs_two_threads"] = round(after / before, 3)
        print(f"\nSciFact build, {figures['cores']} cores: one thread {base} s, two threads in "
              f"one process {before} s, worker processes {after} s")
        print(f"all cores / one process, one thread: {figures['all_cores_vs_one_thread']} "
              f"(target <= 0.6); / two threads: {figures['all_cores_vs_two_threads']}")
        print(f"identical vectors in all three builds: {figures['same_vectors']}")
        print(json.dumps(figures, indent=2))
        return figures
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

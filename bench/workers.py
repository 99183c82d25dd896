"""Workers: c=16 throughput and memory of `make serve WORKERS=2` against WORKERS=1, same index,
same questions, same run. `python bench/workers.py [--corpus DIR] [--seconds 4] [--rounds 5]
[--generator auto|wrk|python]`; prints JSON (and returns it to `make bench`).

Throughput: both servers up, c=16 rounds alternating between them, medians. The load comes from
wrk when it is installed (a C program: one event-loop thread that costs the two cores little)
and otherwise from the Python generator in bench/http_load.py, which is said in the output: on
a 2-core machine the generator shares the cores with the workers it measures. Each round
reports the cores the generator and the server kept busy (CPU time over wall time).

Memory: each server alone (the other one stopped), after one c=16 round: PSS summed over its
processes, the supervisor included. PSS splits the pages processes share (libraries, the
memory-mapped index and encoder weights) between them, instead of counting them once per
process as RSS does (printed too); measured alone, no page is split with the other server.
Run as root, it also gives the physical pages the server's processes map, each counted once
(`distinct_mb`): PSS also splits library pages with any other program of the same virtualenv
running on the machine, so it moves with them, and this does not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import http_load, wrk_load  # noqa: E402
from bench.server import Server  # noqa: E402

SHARED = ROOT.parent / "shared"
SEED_QA = SHARED / "eval" / "seed_qa.jsonl"
ENV = {"QA_RATE_LIMIT": "0", "QA_RELOAD_INTERVAL": "0", "QA_LOG_LEVEL": "WARNING",
       "QA_CACHE_SIZE": "0"}
Load = Callable[[int, float], dict[str, Any]]


def generator(choice: str, bodies: list[bytes]) -> tuple[dict[str, str], Load]:
    """The load generator: its description, and `load(port, seconds)` for one c=16 round."""
    version = wrk_load.available()
    if choice == "wrk" and version is None:
        raise SystemExit("--generator wrk: wrk is not installed (apt-get install wrk)")
    if choice != "python" and version is not None:
        def with_wrk(port: int, seconds: float) -> dict[str, Any]:
            return wrk_load.concurrent(port, bodies, 16, seconds=seconds)
        return {"name": "wrk", "version": version}, with_wrk

    asks = [http_load.post("/api/ask", json.loads(body)) for body in bodies]

    def with_python(port: int, seconds: float) -> dict[str, Any]:
        cpu, wall = time.process_time(), time.perf_counter()
        run = http_load.concurrent(port, asks, 16, seconds=seconds)
        run["generator_cores"] = round((time.process_time() - cpu)
                                       / (time.perf_counter() - wall), 3)
        return run
    why = ("asked for" if choice == "python"
           else "fallback: wrk is not installed, and this generator shares the cores")
    return {"name": "python", "note": why}, with_python


def round_on(server: Server, load: Load, seconds: float) -> dict[str, Any]:
    cpu, wall = server.cpu_seconds(), time.perf_counter()
    run = load(server.port, seconds)
    # The warm-up is in both, so this is the server's average over the whole call.
    run["server_cores"] = round((server.cpu_seconds() - cpu) / (time.perf_counter() - wall), 3)
    run["load_average"] = os.getloadavg()[0]
    return run


def measure(servers: dict[int, Server], load: Load, seconds: float,
            rounds: int) -> dict[int, dict[str, Any]]:
    """c=16 on each server in turn, `rounds` times, `seconds` each: both are up the whole
    time (an idle one costs nothing), so load from other work on the machine falls on both
    alike. Medians over the rounds."""
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in servers}
    for _ in range(rounds):
        for n, server in servers.items():
            runs[n].append(round_on(server, load, seconds))
    out = {}
    for n, server in servers.items():
        ordered = sorted(runs[n], key=lambda r: r["rps"])
        out[n] = {"workers": n, "cold_start_s": round(server.cold_start_s, 2),
                  "c16": ordered[len(ordered) // 2],
                  "rounds_rps": [r["rps"] for r in runs[n]],
                  # Requests per second for each core the server kept busy: equal for both
                  # means the workers lose nothing, and the ratio is the cores they got.
                  "rps_per_server_core": round(sum(r["rps"] for r in runs[n])
                                               / sum(r["server_cores"] for r in runs[n]), 1),
                  "rounds_server_cores": [r["server_cores"] for r in runs[n]],
                  "rounds_generator_cores": [r["generator_cores"] for r in runs[n]],
                  "failed": sum(r.get("failed", 0) for r in runs[n])}
    return out


def memory_alone(server: Server, load: Load, seconds: float) -> dict[str, Any]:
    """Start `server` with nothing else of the bench up, one c=16 round, its memory."""
    with server:
        ready = server.memory_mb()
        run = load(server.port, seconds)
        return {"at_ready": ready, "after_load": server.memory_mb(),
                "failed": run.get("failed", 0)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds a round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto",
                        help="auto: wrk when installed, else the Python generator")
    # No arguments means the defaults (`make bench` calls main() inside its own command line).
    args = parser.parse_args(argv or [])
    questions = [json.loads(line)["question"] for line in SEED_QA.read_text("utf-8").splitlines()]
    bodies = [json.dumps({"question": q, "top_k": 3}).encode() for q in questions]
    described, load = generator(args.generator, bodies)
    print(f"workers bench: load generator {json.dumps(described)}", file=sys.stderr)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        work = Path(tmp)
        index = work / "index"
        subprocess.run([sys.executable, str(ROOT / "scripts" / "build_index.py"), "--corpus",
                        str(args.corpus), "--index", str(index)], check=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL)
        env = {**ENV, "QA_CORPUS_DIR": str(args.corpus), "QA_INDEX_DIR": str(index)}

        def server(n: int) -> Server:
            # Each server records its answers in its own store, as a deployment would (not
            # in the repository's data/, and not in one SQLite file for both).
            return Server({**env, "QA_WORKERS": str(n), "QA_DATA_DIR": str(work / f"data-{n}")},
                          log=work / f"workers-{n}.log", extra_args=("--no-access-log",))

        servers = {n: server(n) for n in (1, 2)}
        try:
            for s in servers.values():
                s.start()
            results = measure(servers, load, args.seconds, args.rounds)
        finally:
            for s in servers.values():
                s.stop()
        memory = {n: memory_alone(server(n), load, args.seconds) for n in (1, 2)}
    one, two = ({**results[n], "memory": memory[n]} for n in (1, 2))
    after = {n: memory[n]["after_load"] for n in (1, 2)}
    figures = {
        "corpus": str(args.corpus), "cpus": os.cpu_count(), "generator": described,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "one": one, "two": two,
        "throughput_ratio": round(two["c16"]["rps"] / one["c16"]["rps"], 2),
        "pss_ratio_after_load": round(after[2]["pss_mb"] / after[1]["pss_mb"], 2),
        "rss_ratio_after_load": round(after[2]["rss_mb"] / after[1]["rss_mb"], 2),
    }
    if "distinct_mb" in after[1] and "distinct_mb" in after[2]:
        figures["distinct_ratio_after_load"] = round(after[2]["distinct_mb"]
                                                     / after[1]["distinct_mb"], 2)
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])

"""Workers: c=16 throughput and memory of `make serve WORKERS=2` against WORKERS=1, same index,
same questions, same run: both servers up, c=16 rounds alternating between them (medians).
`python bench/workers.py [--corpus DIR] [--seconds 4] [--rounds 5]`; prints JSON.

Memory is PSS summed over the server's processes (the supervisor included): pages the
processes share, such as libraries and the memory-mapped index arrays, are split between them
instead of counted once per process as RSS does (RSS printed too).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import http_load  # noqa: E402
from bench.server import Server  # noqa: E402

SHARED = ROOT.parent / "shared"
SEED_QA = SHARED / "eval" / "seed_qa.jsonl"
ENV = {"QA_RATE_LIMIT": "0", "QA_RELOAD_INTERVAL": "0", "QA_LOG_LEVEL": "WARNING",
       "QA_CACHE_SIZE": "0"}


def measure(servers: dict[int, Server], asks: list[bytes], seconds: float,
            rounds: int) -> dict[int, dict[str, Any]]:
    """c=16 on each server in turn, `rounds` times, `seconds` each: both are up the whole
    time (an idle one costs nothing), so load from other work on the machine falls on both
    alike. Medians over the rounds."""
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in servers}
    for _ in range(rounds):
        for n, server in servers.items():
            run = http_load.concurrent(server.port, asks, 16, seconds=seconds)
            runs[n].append({**run, "load_average": os.getloadavg()[0]})
    out = {}
    for n, server in servers.items():
        ordered = sorted(runs[n], key=lambda r: r["rps"])
        out[n] = {"workers": n, "cold_start_s": round(server.cold_start_s, 2),
                  "memory_after_load": server.memory_mb(), "c16": ordered[len(ordered) // 2],
                  "rounds_rps": [r["rps"] for r in runs[n]],
                  "failed": sum(r.get("failed", 0) for r in runs[n])}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds a round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    questions = [json.loads(line)["question"] for line in SEED_QA.read_text("utf-8").splitlines()]
    asks = [http_load.post("/api/ask", {"question": q, "top_k": 3}) for q in questions]
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        work = Path(tmp)
        index = work / "index"
        subprocess.run([sys.executable, str(ROOT / "scripts" / "build_index.py"), "--corpus",
                        str(args.corpus), "--index", str(index)], check=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL)
        env = {**ENV, "QA_CORPUS_DIR": str(args.corpus), "QA_INDEX_DIR": str(index)}
        servers = {n: Server({**env, "QA_WORKERS": str(n)}, log=work / f"workers-{n}.log",
                             extra_args=("--no-access-log",)) for n in (1, 2)}
        try:
            ready = {}
            for n, server in servers.items():
                server.start()
                ready[n] = server.memory_mb()
            results = measure(servers, asks, args.seconds, args.rounds)
        finally:
            for server in servers.values():
                server.stop()
        one, two = ({**results[n], "memory_at_ready": ready[n]} for n in (1, 2))
    figures = {
        "corpus": str(args.corpus), "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "one": one, "two": two,
        "throughput_ratio": round(two["c16"]["rps"] / one["c16"]["rps"], 2),
        "pss_ratio_after_load": round(two["memory_after_load"]["pss_mb"]
                                      / one["memory_after_load"]["pss_mb"], 2),
        "rss_ratio_after_load": round(two["memory_after_load"]["rss_mb"]
                                      / one["memory_after_load"]["rss_mb"], 2),
    }
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

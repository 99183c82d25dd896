"""Latency and throughput of /api/ask and /api/chat with and without the shipped connection
limits (h11 with a bounded head vs uvicorn's default httptools), on loopback, real model."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from bench import http_load
from bench.server import ROOT, Server, serve_arguments
from service.index.indexing import build_index
from service.settings import Settings

LIMITS = ("--http", "--h11-max-incomplete-event-size", "--timeout-keep-alive",
          "--limit-concurrency", "--backlog")


def without_options(args: list[str], options: tuple[str, ...]) -> list[str]:
    """`args` without the given options and their values."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        else:
            out.append(arg)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    questions = [json.loads(line)["question"] for line in
                 (ROOT.parent / "shared" / "eval" / "seed_qa.jsonl").read_text().splitlines()]
    asks = [http_load.post("/api/ask", {"question": q, "top_k": 3}) for q in questions]
    chats = [http_load.post("/api/chat", {"messages": [
        {"role": "user", "content": "What does a VP of Product do?"},
        {"role": "assistant", "content": "…"}, {"role": "user", "content": q}]})
        for q in questions]
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        build_index(Settings(corpus_dir=ROOT / "corpus", index_dir=index))
        env = {"QA_INDEX_DIR": str(index), "QA_CORPUS_DIR": str(ROOT / "corpus"),
               "QA_CACHE_SIZE": "0", "QA_RATE_LIMIT": "0", "QA_LOG_LEVEL": "WARNING"}
        # The `make serve` arguments without --host/--port (the Server adds its own).
        base = without_options(serve_arguments("127.0.0.1", 1), ("--host", "--port"))
        for name, args in (("httptools, no limits", without_options(base, LIMITS)),
                           ("shipped (h11 + limits)", base)):
            with Server(env, args=args) as server:
                assert server.process is not None
                for label, reqs in (("ask", asks), ("chat", chats)):
                    seq = http_load.sequential(server.port, reqs * 10, warmup=len(reqs))
                    cpu = cpu_seconds(server.process.pid)
                    conc = http_load.concurrent(server.port, reqs, 16, seconds=6.0,
                                                warmup_seconds=0)
                    # Server CPU per request: less sensitive to a busy machine than req/s.
                    per = (cpu_seconds(server.process.pid) - cpu) / max(1, conc["n"]) * 1000
                    print(f"{name:24} {label:4}  c=1 p50 {seq['p50_ms']:.2f} ms "
                          f"p99 {seq['p99_ms']:.2f} ms | c=16 {conc['rps']:.0f} req/s "
                          f"p50 {conc['p50_ms']:.1f} ms p99 {conc['p99_ms']:.1f} ms | "
                          f"server CPU {per:.2f} ms/request | "
                          f"failed {seq['failed'] + conc['failed']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Hardening figures against a real uvicorn server on loopback: sustained load, a burst past
the rate limit, and a long schemathesis run. `main()` prints and returns them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as `python bench/hardening.py`

HOST = "127.0.0.1"
SEED = ROOT.parent / "shared" / "eval" / "seed_qa.jsonl"
FOLLOWUPS = ROOT.parent / "shared" / "eval" / "chat_followups.jsonl"
INTENDED = {200, 429, 503}  # anything else, or a broken connection, is a failure


def _questions() -> tuple[list[str], list[list[str]]]:
    asks = [json.loads(line)["question"] for line in SEED.read_text("utf-8").splitlines()
            if line.strip()] if SEED.is_file() else []
    chats = [json.loads(line)["turns"] for line in FOLLOWUPS.read_text("utf-8").splitlines()
             if line.strip()] if FOLLOWUPS.is_file() else []
    return asks or ["What does a head of product do?"], chats or [["What is a CPO?", "And a VP?"]]


class Server:
    """uvicorn as `make serve` runs it, on a free loopback port, stopped by its own PID."""

    def __init__(self, port: int, process: subprocess.Popen[bytes]) -> None:
        self.port, self.process = port, process

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")


@contextmanager
def serve(env: dict[str, str], log: Path | None = None,
          timeout: float = 120.0) -> Iterator[Server]:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = int(sock.getsockname()[1])
    out = log.open("ab") if log else subprocess.DEVNULL
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "uvicorn"), "--factory", "service.app:create_app",
         "--host", HOST, "--port", str(port), "--log-config", "service/http/log_config.json",
         "--no-proxy-headers"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env})
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not become ready (log: {log})")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
        yield Server(port, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def percentiles(ms: Sequence[float]) -> dict[str, float]:
    if not ms:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "n": 0}
    values = np.asarray(ms)
    return {"p50_ms": round(float(np.percentile(values, 50)), 2),
            "p99_ms": round(float(np.percentile(values, 99)), 2), "n": len(ms)}


def _request(path: str, payload: dict[str, Any], client_ip: str) -> bytes:
    body = json.dumps(payload).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"X-Forwarded-For: {client_ip}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def _mix(client_ip: str) -> list[bytes]:
    """Four questions in five go to /api/ask, one in five is a follow-up to /api/chat."""
    asks, chats = _questions()
    mix = []
    for i, question in enumerate(asks):
        mix.append(_request("/api/ask", {"question": question}, client_ip))
        if i % 4 == 3:
            turns = chats[(i // 4) % len(chats)]
            messages = [{"role": "user", "content": t} for t in turns]
            mix.append(_request("/api/chat", {"messages": messages}, client_ip))
    return mix


class Tally:
    """Latencies and outcomes of one group of clients."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, float, int]] = []  # (time sent, ms, status)
        self.errors: Counter[str] = Counter()

    def summary(self, since: float = 0.0, until: float = float("inf")) -> dict[str, Any]:
        rows = [(ms, status) for t, ms, status in self.sent if since <= t < until]
        statuses = Counter(status for _, status in rows)
        failed = sum(n for s, n in statuses.items() if s not in INTENDED)
        return {**percentiles([ms for ms, _ in rows]),
                "statuses": {str(s): n for s, n in sorted(statuses.items())},
                "failed": failed + sum(self.errors.values()), "errors": dict(self.errors)}


async def _client(port: int, requests: Sequence[bytes], tally: Tally, stop: float,
                  budget: list[int], pause: float = 0.0, offset: int = 0) -> None:
    """One keep-alive connection sending `requests` in turn until `stop` or the budget ends."""
    reader, writer = await asyncio.open_connection(HOST, port)
    i = offset
    try:
        while time.perf_counter() < stop and budget[0] > 0:
            budget[0] -= 1
            raw = requests[i % len(requests)]
            i += 1
            sent = time.perf_counter()
            try:
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                status, length, close = _parse(head)
                await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                tally.errors[type(exc).__name__] += 1
                writer.close()
                reader, writer = await asyncio.open_connection(HOST, port)
                continue
            tally.sent.append((sent, (time.perf_counter() - sent) * 1000, status))
            if close:
                writer.close()
                reader, writer = await asyncio.open_connection(HOST, port)
            if pause:
                await asyncio.sleep(pause)
    finally:
        writer.close()


def _parse(head: bytes) -> tuple[int, int, bool]:
    lines = head.split(b"\r\n")
    status, length, close = int(lines[0].split()[1]), 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    return status, length, close


async def _load(port: int, clients: int, seconds: float, max_requests: int) -> dict[str, Any]:
    tally = Tally()
    budget = [max_requests]
    started = time.perf_counter()
    # Each client is its own address behind the trusted loopback proxy, as on a real intranet.
    await asyncio.gather(*(
        _client(port, _mix(f"10.1.{k // 250}.{k % 250 + 1}"), tally, started + seconds, budget,
                offset=k) for k in range(clients)))
    elapsed = time.perf_counter() - started
    return {"clients": clients, "seconds": round(elapsed, 1),
            "requests": len(tally.sent), "rps": round(len(tally.sent) / elapsed, 1),
            **tally.summary()}


def load(clients: int = 32, seconds: float = 60.0, max_requests: int = 200_000) -> dict[str, Any]:
    """`clients` keep-alive clients back to back; every answer computed (cache off)."""
    env = {"QA_RATE_LIMIT": "1000000", "QA_TRUSTED_PROXIES": "127.0.0.1", "QA_CACHE_SIZE": "0"}
    with tempfile.TemporaryDirectory() as tmp, serve(env, Path(tmp) / "server.log") as srv:
        asyncio.run(_load(srv.port, clients, 2.0, 5_000))  # warm-up, not counted
        result = asyncio.run(_load(srv.port, clients, seconds, max_requests))
        result["server_rss_mb"] = srv.rss_mb()
        result["log_lines_json"] = _json_lines(Path(tmp) / "server.log")
    return result


async def _burst(port: int, steady: int, abusers: int, phase: float) -> dict[str, Any]:
    calm, hammer = Tally(), Tally()
    start = time.perf_counter()
    end = start + 3 * phase
    # Steady clients ask twice a second each, within the limit, through all three phases.
    calm_tasks = [asyncio.create_task(_client(
        port, _mix(f"10.2.0.{k + 1}"), calm, end, [10**9], pause=0.5, offset=k))
        for k in range(steady)]
    await asyncio.sleep(phase)
    burst_from = time.perf_counter()
    # One client (one address) opens `abusers` connections and sends as fast as it can.
    await asyncio.gather(*(_client(port, _mix("10.66.66.66"), hammer, burst_from + phase,
                                   [10**9], offset=k) for k in range(abusers)))
    burst_to = time.perf_counter()
    await asyncio.gather(*calm_tasks)
    return {
        "phase_seconds": phase,
        "others_before": calm.summary(until=burst_from),
        "others_during": calm.summary(since=burst_from, until=burst_to),
        "others_after": calm.summary(since=burst_to),
        "burst": {**hammer.summary(), "rps": round(len(hammer.sent) / (burst_to - burst_from), 1)},
    }


def burst(per_minute: int = 120, steady: int = 8, abusers: int = 32,
          phase: float = 8.0) -> dict[str, Any]:
    """One client far past its allowance: its excess gets 429; do the others notice? The same
    burst against a server without the limit shows what the limit spares them."""
    result: dict[str, Any] = {"rate_limit_per_minute": per_minute}
    for name, limit in (("limited", per_minute), ("unlimited", 0)):
        env = {"QA_RATE_LIMIT": str(limit), "QA_TRUSTED_PROXIES": "127.0.0.1",
               "QA_CACHE_SIZE": "0"}
        with serve(env) as srv:
            result[name] = asyncio.run(_burst(srv.port, steady, abusers, phase))
    return result


def fuzz(examples: int = 1000) -> dict[str, Any]:
    """Schemathesis, positive and negative, against the app with the real model, in process."""
    from schemathesis import GenerationMode

    from service.app import create_app
    from service.settings import Settings
    from tests.test_schema import fuzz as run

    app = create_app(Settings(rate_limit=0, cache_size=0, reload_interval=0))
    results = {}
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        started = time.perf_counter()
        outcome = run(app, mode, examples)
        results[mode.value] = {
            "cases": sum(outcome["calls"].values()), "statuses": outcome["statuses"],
            "server_errors": sum(n for s, n in outcome["statuses"].items() if s >= 500),
            "failures": len(outcome["failures"]), "first_failures": outcome["failures"][:3],
            "seconds": round(time.perf_counter() - started, 1)}
    return results


def _json_lines(path: Path) -> dict[str, int]:
    """How many server log lines parse as JSON (the log config's promise)."""
    counts: Counter[str] = Counter()
    for line in path.read_text("utf-8", "replace").splitlines():
        try:
            json.loads(line)
            counts["json"] += 1
        except ValueError:
            counts["other"] += 1
    return dict(counts)


def main() -> dict[str, Any]:
    """All hardening figures; bounded: about 3 minutes on 2 cores."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    subprocess.run([sys.executable, "scripts/build_index.py", "--if-stale"], cwd=ROOT, check=True)
    figures = {"load": load(), "burst": burst(), "schemathesis": fuzz()}
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()

"""Load generation on loopback: raw HTTP/1.1 keep-alive requests, timed from send to last byte.

A bare socket client costs the server's two cores as little as a Python client can, so the
figures are the server's, not the client's.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

HOST = "127.0.0.1"


def post(path: str, payload: dict[str, Any]) -> bytes:
    """One complete keep-alive request, ready to send."""
    body = json.dumps(payload).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


def _parse_head(head: bytes) -> tuple[int, int]:
    """Status and Content-Length of a response head (uvicorn always sends the length)."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return status, int(value)
    raise ValueError("response without Content-Length")


class Connection:
    """One blocking keep-alive connection."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def call(self, raw: bytes) -> tuple[int, bytes]:
        self.sock.sendall(raw)
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = self.file.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            head += line
        status, length = _parse_head(head)
        return status, self.file.read(length)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def percentiles(ms: Sequence[float]) -> dict[str, float]:
    values = np.asarray(ms, dtype=np.float64)
    if len(values) == 0:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "n": 0}
    return {"p50_ms": round(float(np.percentile(values, 50)), 3),
            "p99_ms": round(float(np.percentile(values, 99)), 3), "n": len(values)}


def sequential(port: int, requests: Sequence[bytes], warmup: int = 20,
               max_seconds: float = 30.0) -> dict[str, Any]:
    """Concurrency 1: each request sent after the previous answer, latency per request."""
    conn = Connection(port)
    try:
        for raw in requests[:warmup]:
            conn.call(raw)
        latencies: list[float] = []
        failed = 0
        stop = time.perf_counter() + max_seconds
        for raw in requests:
            started = time.perf_counter()
            status, _ = conn.call(raw)
            latencies.append((time.perf_counter() - started) * 1000)
            failed += status != 200
            if started > stop:
                break
    finally:
        conn.close()
    return {**percentiles(latencies), "failed": failed}


async def _worker(port: int, requests: Sequence[bytes], offset: int, stop: float,
                  budget: list[int], latencies: list[float], statuses: Counter[int]) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    i = offset
    try:
        while time.perf_counter() < stop and budget[0] > 0:
            budget[0] -= 1
            raw = requests[i % len(requests)]
            i += 1
            started = time.perf_counter()
            writer.write(raw)
            status, length = _parse_head(await reader.readuntil(b"\r\n\r\n"))
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[status] += 1
    finally:
        writer.close()


async def _concurrent(port: int, requests: Sequence[bytes], concurrency: int, seconds: float,
                      max_requests: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    budget = [max_requests]
    started = time.perf_counter()
    stride = max(1, len(requests) // concurrency)
    await asyncio.gather(*(_worker(port, requests, k * stride, started + seconds, budget,
                                   latencies, statuses) for k in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"concurrency": concurrency, "seconds": round(elapsed, 2),
            "rps": round(len(latencies) / elapsed, 1), **percentiles(latencies),
            "failed": sum(n for s, n in statuses.items() if s != 200),
            "statuses": {str(s): n for s, n in sorted(statuses.items())}}


def concurrent(port: int, requests: Sequence[bytes], concurrency: int, seconds: float = 8.0,
               max_requests: int = 50_000, warmup_seconds: float = 1.0) -> dict[str, Any]:
    """`concurrency` keep-alive clients sending back to back, bounded in time and count."""
    import uvloop

    uvloop.run(_concurrent(port, requests, concurrency, warmup_seconds, max_requests))
    result: dict[str, Any] = uvloop.run(
        _concurrent(port, requests, concurrency, seconds, max_requests))
    return result

"""Real servers for the multi-process tests: the service through scripts/serve.py, and a
real-model index to serve, on loopback in temporary folders."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from service.index.encoder import OnnxEncoder, describe_model
from service.index.indexing import build_index, encoder_folder
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def real_index(corpus: Path, index: Path, encoder_dir: Path) -> Settings:
    """`corpus` indexed into `index` with the real model, reusing an exported encoder."""
    shutil.copytree(encoder_dir, encoder_folder(index, OnnxEncoder.kind, describe_model(None)))
    settings = Settings(corpus_dir=corpus, index_dir=index)
    build_index(settings)
    return settings


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not become ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


@contextmanager
def service(settings: Settings, workdir: Path, *, workers: int = 1,
            env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`scripts/serve.py` (uvicorn, `workers` processes) on a free port; yields its URL and
    process. Stopped with SIGTERM, then SIGKILL of its whole process group."""
    port = free_port()
    full = {**os.environ, "QA_CORPUS_DIR": str(settings.corpus_dir),
            "QA_INDEX_DIR": str(settings.index_dir), "QA_WORKERS": str(workers),
            "QA_RELOAD_INTERVAL": "0.5", "QA_LOG_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    log = workdir / f"serve-{port}.log"
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "scripts/serve.py", "--host", "127.0.0.1", "--port", str(port),
             "--no-access-log", "--log-level", "warning"],
            cwd=ROOT, env=full, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(url, proc, log)
        yield url, proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
    # Workers left behind by a killed supervisor share its process group.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


class RedisServer:
    """Debian's redis-server on a free loopback port in a temporary folder, no persistence;
    stopped and started again by the tests that need Redis to go away."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder), "--protected-mode", "yes"],
            stdout=(self.folder / "redis.log").open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        log = (self.folder / "redis.log").read_text()
        raise RuntimeError(f"redis-server did not start:\n{log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@contextmanager
def redis_server(folder: Path) -> Iterator[RedisServer]:
    server = RedisServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


HAPROXY = """global
    maxconn 512
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    # A request a replica could not answer (refused, reset, or closed without a response:
    # gone) is retried on the other one; answers have no side effects, so a retry is safe.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
    option http-buffer-request
frontend qa
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    default-server inter 200ms fall 2 rise 2
{servers}
"""


@contextmanager
def haproxy(backends: list[str], folder: Path) -> Iterator[str]:
    """Debian's haproxy in the foreground, round-robin over `backends` (URLs), health-checked
    on /readyz; yields its URL."""
    port = free_port()
    servers = "\n".join(f"    server r{i} {url.removeprefix('http://')} check"
                        for i, url in enumerate(backends))
    config = folder / "haproxy.cfg"
    config.write_text(HAPROXY.format(port=port, servers=servers), "utf-8")
    log = folder / "haproxy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

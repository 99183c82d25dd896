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

from service.encoder import OnnxEncoder, describe_model
from service.indexing import build_index, encoder_folder
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

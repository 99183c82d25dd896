"""scripts/serve.py: several uvicorn workers on one index, each reloading it, one /metrics."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from scripts.serve import main
from service.app import create_app, preload_for_workers
from service.index import encoder, prepared
from service.index.indexing import build_index
from tests.conftest import SEED_CORPUS
from tests.servers import ROOT, real_index, service

QUESTION = {"question": "What does a head of product do?"}


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def answered(metrics: Iterable[Metric]) -> float:
    return sum(sample.value for family in metrics for sample in family.samples
               if sample.name == "qa_answers_total")


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def connections_by_worker(workers: list[int], port: int) -> dict[int, int]:
    """Established connections to `port` that each worker holds (its sockets matched against
    the kernel's TCP tables by inode)."""
    established: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                established.add(fields[9])
    counts = {}
    for pid in workers:
        held = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:  # closed meanwhile
                continue
            held += target.startswith("socket:[") and target[8:-1] in established
        counts[pid] = held
    return counts


def burst(workers: list[int], port: int, n: int = 16) -> dict[int, int]:
    """Open `n` connections at once, as a load balancer's pool or a load generator does, and
    return how many each worker accepted."""
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    try:
        deadline = time.monotonic() + 5
        while True:
            counts = connections_by_worker(workers, port)
            if sum(counts.values()) >= n or time.monotonic() > deadline:
                return counts
            time.sleep(0.02)
    finally:
        for sock in sockets:
            sock.close()


def ask_fresh(url: str) -> httpx.Response:
    # A new connection each time, so the kernel spreads the requests over the workers.
    with httpx.Client(timeout=10) as client:
        return client.post(f"{url}/api/ask", json=QUESTION)


def test_two_workers_reload_and_count_together(tmp_path: Path, real_encoder_dir: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(SEED_CORPUS, corpus)
    settings = real_index(corpus, tmp_path / "index", real_encoder_dir)
    shared = tmp_path / "metrics"
    encoders = tmp_path / "encoders"
    env = {"QA_RATE_LIMIT": "0", "PROMETHEUS_MULTIPROC_DIR": str(shared),
           "QA_ENCODER_CACHE_DIR": str(encoders)}
    with service(settings, tmp_path, workers=2, env=env) as (url, launcher):
        workers = children(launcher.pid)
        assert len(workers) == 2
        for pid in workers:
            # Forked from the launcher after its imports (a spawned worker runs another
            # command line), and both workers map the one prepared encoder: started together,
            # one made it and the other waited for it.
            assert Path(f"/proc/{pid}/cmdline").read_bytes() == \
                Path(f"/proc/{launcher.pid}/cmdline").read_bytes()
        weights = [str(path) for path in encoders.glob(f"*/{prepared.WEIGHTS}")]
        assert len(weights) == 1
        assert all(weights[0] in Path(f"/proc/{pid}/maps").read_text() for pid in workers)
        # Connections opened together are spread over both workers (each listens on a socket
        # of its own, scripts/serve.own_socket), where one woken worker used to take the
        # whole queue and leave the other idle for as long as those connections lived.
        port = int(url.rsplit(":", 1)[1])
        for _ in range(5):
            spread = burst(workers, port)
            assert sum(spread.values()) == 16 and min(spread.values()) > 0, spread
        first = ask_fresh(url).json()["index_version"]
        sent = 1

        def per_worker() -> list[float]:
            # Each worker keeps its own file of counts. The middleware counts a request once
            # its last byte is sent, so a reply can arrive a moment before its count is
            # written: wait (bounded) for the counts to reach what was sent.
            deadline = time.monotonic() + 5
            while True:
                counts = [answered(MultiProcessCollector.merge([str(path)]))  # type: ignore[no-untyped-call]
                          for path in sorted(shared.glob("counter_*.db"))]
                if sum(counts) >= sent or time.monotonic() > deadline:
                    return counts
                time.sleep(0.05)

        # The kernel hands a new connection to whichever worker accepts first, so one quick
        # worker can take a whole batch: send batches of eight at a time until both have
        # answered some (bounded, so a launcher that starts one worker still fails).
        with ThreadPoolExecutor(8) as pool:
            for _ in range(50):
                statuses = {r.status_code for r in pool.map(lambda _: ask_fresh(url), range(8))}
                assert statuses == {200}
                sent += 8
                counts = per_worker()
                if len(counts) == 2 and min(counts) > 0:
                    break
        assert len(counts) == 2 and min(counts) > 0 and sum(counts) == sent
        # ... and every scrape, whichever worker answers it, counts them all.
        for _ in range(8):
            with httpx.Client(timeout=10) as client:
                text = client.get(f"{url}/metrics").text
            assert metric(text, 'qa_http_requests_total{method="POST",route="/api/ask",'
                                'status="200"}') == sent
            assert metric(text, 'qa_answers_total{outcome="answered",route="/api/ask"}') == sent
            assert metric(text, "qa_answers_in_flight") == 0

        (corpus / "extra.md").write_text("# Extra\n\nA new page about lighthouses.\n", "utf-8")
        report = build_index(settings)
        assert report.version != first
        # Within the reload interval (0.5 s) plus slack, every worker serves the new version.
        deadline = time.monotonic() + 5
        while True:
            versions = {ask_fresh(url).json()["index_version"] for _ in range(16)}
            if versions == {report.version} or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert versions == {report.version}

        # SIGTERM: the workers finish and exit, then the launcher, cleanly.
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(30) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_the_launcher_freezes_its_imports_and_loads_the_served_tokenizer(
        tmp_path: Path, real_encoder_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = real_index(SEED_CORPUS, tmp_path / "index", real_encoder_dir)
    # In a process of its own: prefork() turns the collector off for good.
    launcher = subprocess.run(
        [sys.executable, "-c", "import gc, sys\n"
         "from scripts.serve import prefork\n"
         "from service.index import encoder\n"
         "from service.settings import Settings\n"
         "prefork(Settings(corpus_dir=sys.argv[1], index_dir=sys.argv[2]))\n"
         "print(gc.isenabled(), gc.get_freeze_count(), len(encoder._PRELOADED))",
         str(settings.corpus_dir), str(settings.index_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    enabled, frozen, tokenizers = launcher.stdout.split()
    # The imports' objects are out of the collector's reach (it would write to their pages
    # in every worker), and the index's tokenizer is loaded for the workers to share.
    assert enabled == "False" and int(frozen) > 50_000 and tokenizers == "1"

    # A worker's engine takes the launcher's tokenizer for the index it serves.
    monkeypatch.setattr(encoder, "_PRELOADED", {})
    assert preload_for_workers(settings) == 1
    app = create_app(settings.model_copy(update={"reload_interval": 0, "recording": False}))
    with TestClient(app):
        served = app.state.engine.snapshot.encoder
        assert served._tokenizer in encoder._PRELOADED.values()
    # Nothing to preload (no index yet): the workers report it themselves.
    empty = settings.model_copy(update={"index_dir": tmp_path / "none"})
    assert preload_for_workers(empty) == 0


def test_a_bad_setting_stops_the_launcher_naming_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("QA_WORKERS", "0")
    assert main(["--port", "1"]) == 1
    assert capsys.readouterr().err.startswith("invalid configuration: QA_WORKERS:")

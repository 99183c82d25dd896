"""Two replicas on one index folder behind a real haproxy, with and without a real Redis:
shared limits, Redis going away, a rebuild under load, a replica killed under load."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from service.index.indexing import build_index
from service.settings import Settings
from tests.conftest import SEED_CORPUS
from tests.servers import RedisServer, haproxy, real_index, redis_server, service

DOC = "/api/documents/head-of-product.txt"
ASK = {"question": "What does a head of product do?", "top_k": 3}
INTERVAL = 0.5  # QA_RELOAD_INTERVAL of the replicas (tests/servers.py)


@pytest.fixture
def index(tmp_path: Path, real_encoder_dir: Path) -> Settings:
    corpus = tmp_path / "corpus"
    shutil.copytree(SEED_CORPUS, corpus)
    return real_index(corpus, tmp_path / "index", real_encoder_dir)


def requests_served(url: str) -> float:
    """How many document requests this replica answered (200 or 429), from its /metrics."""
    return sum(float(line.split()[-1])
               for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines()
               if line.startswith('qa_http_requests_total{method="GET",route="/api/documents/'))


def test_a_client_is_limited_once_across_replicas_and_redis_down_costs_no_answer(
        index: Settings, tmp_path: Path) -> None:
    with ExitStack() as stack:
        redis: RedisServer = stack.enter_context(redis_server(tmp_path / "redis"))
        env = {"QA_RATE_LIMIT": "6", "QA_REDIS_URL": redis.url}
        replicas = [stack.enter_context(service(index, tmp_path, env=env))[0] for _ in range(2)]
        balancer = stack.enter_context(haproxy(replicas, tmp_path))
        with httpx.Client(base_url=balancer, timeout=10) as client:
            statuses = Counter(client.get(DOC).status_code for _ in range(12))
        # Six a minute for this client, whichever replica answers: not six per replica.
        assert statuses == {200: 6, 429: 6}
        served = [requests_served(url) for url in replicas]
        assert sum(served) == 12 and min(served) >= 4, served  # both took their share
        for url in replicas:
            assert httpx.get(f"{url}/readyz").json()["rate_limits"] == "shared"

        redis.stop()
        with httpx.Client(base_url=balancer, timeout=10) as client:
            answers = [client.post("/api/ask", json=ASK) for _ in range(6)]
        # Each replica falls back to its own fresh bucket: the answers keep coming.
        assert [r.status_code for r in answers] == [200] * 6
        assert all(r.json()["citations"] for r in answers)
        for url in replicas:
            ready = httpx.get(f"{url}/readyz")
            assert ready.status_code == 200
            assert ready.json()["rate_limits"] == "per-process (Redis unreachable)"
            assert 'qa_rate_limit_shared{limit="requests"} 0.0' in httpx.get(
                f"{url}/metrics").text


@dataclass
class Load:
    """Clients asking through the balancer until stopped; every outcome kept."""

    url: str
    clients: int = 4
    results: list[tuple[float, int, str, list[str]]] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        # A connection per request: a failure then counts requests, not a request that
        # raced the balancer closing a kept-alive connection after an earlier failure.
        with httpx.Client(base_url=self.url, timeout=15,
                          headers={"Connection": "close"}) as client:
            while not self._stop.is_set():
                try:
                    reply = client.post("/api/ask", json=ASK)
                except httpx.HTTPError as exc:
                    self.errors.append((time.monotonic(), type(exc).__name__))
                    continue
                body = reply.json() if reply.status_code == 200 else {}
                self.results.append((time.monotonic(), reply.status_code,
                                     body.get("index_version", ""),
                                     [c["doc_id"] for c in body.get("citations", [])]))

    @property
    def failed(self) -> int:
        return len(self.errors) + sum(1 for r in self.results if r[1] != 200)

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def replica_version(url: str) -> str:
    version: str = httpx.get(f"{url}/readyz", timeout=5).json()["index_version"]
    return version


def test_a_rebuild_under_load_reaches_every_replica_with_no_failed_request(
        index: Settings, tmp_path: Path) -> None:
    with ExitStack() as stack:
        replicas = [stack.enter_context(service(index, tmp_path, env={"QA_RATE_LIMIT": "0"}))[0]
                    for _ in range(2)]
        balancer = stack.enter_context(haproxy(replicas, tmp_path))
        old = replica_version(replicas[0])
        with Load(balancer) as load:
            time.sleep(1.0)
            (index.corpus_dir / "lighthouse.md").write_text(
                "# Lighthouse\n\nThe keeper writes every passing ship into a red ledger.\n",
                "utf-8")
            new = build_index(index).version
            published = time.monotonic()
            switched: dict[str, float] = {}
            while len(switched) < 2 and time.monotonic() - published < 10:
                for url in replicas:
                    if url not in switched and replica_version(url) == new:
                        switched[url] = time.monotonic() - published
                time.sleep(0.02)
            time.sleep(1.0)
        assert load.failed == 0, (load.errors[:5], [r for r in load.results if r[1] != 200][:5])
        assert len(load.results) > 20
        # Every replica polls CURRENT each INTERVAL; the slack covers a busy 2-core machine.
        assert set(switched) == set(replicas)
        assert max(switched.values()) <= INTERVAL + 1.0, switched
        versions = {r[2] for r in load.results}
        assert versions == {old, new}
        # Each response is one version's: the new document is cited only by the new one.
        assert not any("lighthouse.md" in r[3] for r in load.results if r[2] == old)


def test_killing_a_replica_under_load_costs_only_its_in_flight_requests(
        index: Settings, tmp_path: Path) -> None:
    with ExitStack() as stack:
        started = [stack.enter_context(service(index, tmp_path, env={"QA_RATE_LIMIT": "0"}))
                   for _ in range(2)]
        balancer = stack.enter_context(haproxy([url for url, _ in started], tmp_path))
        victim = started[0][1]
        with Load(balancer) as load:
            time.sleep(1.5)
            before = len(load.results)
            killed_at = time.monotonic()
            os.killpg(victim.pid, signal.SIGKILL)
            time.sleep(3.0)
        after = [r for r in load.results if r[0] > killed_at]
        assert before > 10 and len(after) > 10  # the survivor kept answering
        # At most one request per client was in flight on the killed replica.
        assert load.failed <= load.clients, (load.errors, [r[:2] for r in load.results
                                                           if r[1] != 200])
        late = [r for r in after if r[1] != 200 and r[0] > killed_at + 1.0]
        assert late == [] and all(t <= killed_at + 1.0 for t, _ in load.errors)

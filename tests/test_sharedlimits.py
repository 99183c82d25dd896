"""Rate limits shared through a real Redis (Debian's redis-server on loopback), and the
per-process fallback while Redis is away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.app import create_app
from service.http.ratelimit import RateLimiter
from service.http.sharedlimits import SharedLimiter, mode_of
from service.settings import InvalidSettings, Settings, from_environment
from tests.conftest import FakeEncoder
from tests.servers import RedisServer, redis_server


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis") as server:
        yield server


def shared(redis: RedisServer, per_minute: float, namespace: str = "t",
           recheck: float = 5.0) -> SharedLimiter:
    return SharedLimiter(redis.url, RateLimiter(per_minute), namespace, recheck=recheck)


def test_two_processes_share_one_allowance(redis: RedisServer) -> None:
    # Two limiters stand for two replicas: 3 a minute between them, not 3 each.
    one, two = shared(redis, 3), shared(redis, 3)
    assert [one.hit("1.2.3.4"), two.hit("1.2.3.4"), one.hit("1.2.3.4")] == [0.0, 0.0, 0.0]
    wait = two.hit("1.2.3.4")
    assert 19.0 < wait <= 20.0  # one token a 20 s
    assert 19.0 < one.retry_after("1.2.3.4") <= 20.0
    assert one.hit("5.6.7.8") == 0.0  # another client has its own bucket
    assert one.mode == two.mode == "shared"
    two.reset("1.2.3.4")
    assert one.hit("1.2.3.4") == 0.0


def test_the_async_interface_takes_from_the_same_buckets(redis: RedisServer) -> None:
    one, two = shared(redis, 2), shared(redis, 2)

    async def run() -> list[float]:
        return [await one.take("c"), await two.take("c"), await one.take("c"),
                await two.peek("c")]

    waits = asyncio.run(run())
    assert waits[:2] == [0.0, 0.0] and waits[2] > 29.0 and waits[3] > 29.0
    assert two.hit("c") > 29.0


def test_concurrent_takes_never_overspend(redis: RedisServer) -> None:
    # The Lua script refills and takes atomically: 50 takes at once from 5 limiters, 20 allowed.
    # A generous Redis timeout: on a busy machine the default 0.25 s can expire and send a
    # take to the per-process fallback, which is another test's subject, not this one's.
    limiters = [SharedLimiter(redis.url, RateLimiter(20), "t", timeout=5.0) for _ in range(5)]

    async def run() -> list[float]:
        return await asyncio.gather(*(lim.take("same") for lim in limiters for _ in range(10)))

    assert sum(1 for wait in asyncio.run(run()) if wait == 0.0) == 20
    assert all(lim.fallbacks == 0 for lim in limiters)


def test_redis_down_falls_back_to_per_process_limits_and_comes_back(
        redis: RedisServer) -> None:
    lim = shared(redis, 2, recheck=0.2)
    assert lim.hit("k") == 0.0
    redis.stop()
    assert lim.hit("k") == 0.0  # the local bucket: a fresh allowance, never an error
    assert lim.mode == "per-process (Redis unreachable)" and lim.fallbacks == 1
    assert mode_of([lim]) == "per-process (Redis unreachable)"
    assert lim.hit("k") == 0.0 and lim.hit("k") > 0  # the local limit still holds
    redis.start()  # a new, empty Redis (no persistence): fresh buckets
    time.sleep(0.3)  # past the recheck time
    assert mode_of([lim]) == "shared"
    assert [lim.hit("k"), lim.hit("k")] == [0.0, 0.0] and lim.hit("k") > 0


def test_the_app_reports_shared_limits_in_readyz_and_metrics(
        fake_settings: Settings, fake_encoder: FakeEncoder, redis: RedisServer) -> None:
    settings = fake_settings.model_copy(update={
        "rate_limit": 2, "redis_url": SecretStr(redis.url), "admin_token": SecretStr("a" * 40)})
    with TestClient(create_app(settings, encoder=fake_encoder)) as client:
        assert client.get("/readyz").json()["rate_limits"] == "shared"
        assert [client.get("/api/documents/head-of-product.txt").status_code
                for _ in range(3)] == [200, 200, 429]
        metrics = client.get("/metrics").text
        assert 'qa_rate_limit_shared{limit="requests"} 1.0' in metrics
        assert 'qa_rate_limit_shared{limit="admin-failures"} 1.0' in metrics
        redis.stop()
        # Answers go on (the local bucket is fresh); readiness stays, and says so.
        assert client.get("/api/documents/head-of-product.txt").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["rate_limits"] == "per-process (Redis unreachable)"
        metrics = client.get("/metrics").text
        assert 'qa_rate_limit_shared{limit="requests"} 0.0' in metrics
        assert 'qa_rate_limit_fallbacks_total{limit="requests"} 1.0' in metrics


def test_a_redis_url_is_checked_at_boot_without_echoing_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QA_REDIS_URL", "http://user:s3cret@cache:6379")
    with pytest.raises(InvalidSettings) as info:
        from_environment()
    assert str(info.value) == ("invalid configuration: QA_REDIS_URL: QA_REDIS_URL must start "
                               "with redis://, rediss:// or unix://")
    monkeypatch.setenv("QA_REDIS_URL", "")
    assert from_environment().redis_url is None

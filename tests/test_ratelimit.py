"""Rate limiting: the token buckets, who the client is, and the 429 through the real app."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.http.ratelimit import ClientIdentity, RateLimiter, retry_after_header
from service.settings import Settings
from tests.conftest import FakeEncoder


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_the_excess_waits_for_refill() -> None:
    clock = Clock()
    limiter = RateLimiter(60, clock=clock)  # one a second, bursts of 60
    assert [limiter.hit("a") for _ in range(60)] == [0.0] * 60
    assert limiter.hit("a") == pytest.approx(1.0)
    assert limiter.hit("b") == 0.0, "clients have separate buckets"
    clock.now += 0.5
    assert limiter.hit("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.hit("a") == 0.0
    assert limiter.hit("a") == pytest.approx(1.0)


def test_refused_requests_take_nothing_and_retry_after_peeks() -> None:
    clock = Clock()
    limiter = RateLimiter(6, burst=2, clock=clock)  # one per 10 s
    assert limiter.retry_after("a") == 0.0
    limiter.hit("a")
    limiter.hit("a")
    for _ in range(5):
        assert limiter.hit("a") == pytest.approx(10.0)
    assert limiter.retry_after("a") == pytest.approx(10.0)
    clock.now += 10
    assert limiter.retry_after("a") == 0.0
    assert limiter.hit("a") == 0.0
    limiter.reset("a")
    assert limiter.hit("a") == 0.0 and limiter.hit("a") == 0.0


def test_memory_is_bounded_by_forgetting_the_least_recent_client() -> None:
    clock = Clock()
    limiter = RateLimiter(1, max_clients=3, clock=clock)
    for key in "abcd":
        limiter.hit(key)
    assert len(limiter) == 3
    # "a" was forgotten, so it starts afresh; "d" still owes a minute.
    assert limiter.hit("a") == 0.0
    assert limiter.hit("d") > 0


def test_concurrent_hits_never_grant_more_than_the_burst() -> None:
    limiter = RateLimiter(0.001, burst=500)  # effectively no refill during the test
    granted: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = sum(1 for _ in range(200) if limiter.hit("same") == 0.0)
        with lock:
            granted.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 500


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)
    with pytest.raises(ValueError):
        RateLimiter(10, max_clients=0)


@pytest.mark.parametrize(("seconds", "header"), [(0.01, "1"), (1.0, "1"), (1.2, "2"),
                                                  (59.9, "60")])
def test_retry_after_is_whole_seconds_never_zero(seconds: float, header: str) -> None:
    assert retry_after_header(seconds) == header


def _scope(peer: str, forwarded: list[str] | None = None) -> dict[str, object]:
    headers = [(b"x-forwarded-for", v.encode()) for v in forwarded or []]
    return {"type": "http", "client": (peer, 1234), "headers": headers}


def test_forwarded_for_is_ignored_unless_the_peer_is_trusted() -> None:
    nobody = ClientIdentity()
    assert nobody.address(_scope("10.0.0.5", ["1.2.3.4"])) == "10.0.0.5"
    proxies = ClientIdentity(["10.0.0.1", "192.168.0.0/16"])
    assert proxies.address(_scope("10.0.0.5", ["1.2.3.4"])) == "10.0.0.5"
    assert proxies.address(_scope("10.0.0.1", ["1.2.3.4"])) == "1.2.3.4"
    assert proxies.address(_scope("192.168.7.7", ["1.2.3.4"])) == "1.2.3.4"


def test_forwarded_for_is_read_from_the_right() -> None:
    proxies = ClientIdentity(["10.0.0.1", "10.0.0.2"])
    # The client wrote "6.6.6.6" itself; the proxies appended what they saw.
    assert proxies.address(_scope("10.0.0.1", ["6.6.6.6, 1.2.3.4, 10.0.0.2"])) == "1.2.3.4"
    assert proxies.address(_scope("10.0.0.1", ["6.6.6.6", "1.2.3.4"])) == "1.2.3.4"
    # Only proxies in the chain: the farthest one is the client.
    assert proxies.address(_scope("10.0.0.1", ["10.0.0.2"])) == "10.0.0.2"
    # No header, or garbage written by a trusted hop: fall back to the last good address.
    assert proxies.address(_scope("10.0.0.1")) == "10.0.0.1"
    assert proxies.address(_scope("10.0.0.1", ["not-an-ip"])) == "10.0.0.1"
    assert proxies.address(_scope("10.0.0.1", ["1.2.3.4, junk, 10.0.0.2"])) == "10.0.0.2"


def test_an_ipv6_client_is_one_bucket_per_64() -> None:
    identity = ClientIdentity()
    a = identity.of(_scope("2001:db8:1:2::a"))
    b = identity.of(_scope("2001:db8:1:2:ffff::b"))
    c = identity.of(_scope("2001:db8:1:3::a"))
    assert a == b == "2001:db8:1:2::/64" and c != a
    assert identity.of(_scope("10.1.2.3")) == "10.1.2.3"


@pytest.fixture
def limited(fake_settings: Settings, fake_encoder: FakeEncoder) -> Iterator[Settings]:
    yield fake_settings.model_copy(update={"rate_limit": 3, "trusted_proxies": ["10.0.0.1"]})


def _ask(client: TestClient, **headers: str) -> int:
    r = client.post("/api/ask", json={"question": "head of product"}, headers=headers)
    return r.status_code


def test_the_excess_gets_429_with_retry_after(limited: Settings,
                                              fake_encoder: FakeEncoder) -> None:
    with TestClient(create_app(limited, encoder=fake_encoder),
                    client=("10.9.9.9", 5000)) as client:
        assert [_ask(client) for _ in range(3)] == [200, 200, 200]
        r = client.post("/api/ask", json={"question": "head of product"})
        assert r.status_code == 429
        # One token every 20 s, less the second the refusal was held back.
        wait = r.headers["retry-after"]
        assert wait in ("19", "20")
        assert r.json() == {"detail": "too many requests: the limit is 3 a minute per client; "
                                      f"retry in {wait} s"}
        # Other routes share the allowance; probes, scrapes and the widget's files never do.
        assert client.get("/api/documents/head-of-product.txt").status_code == 429
        for path in ("/healthz", "/readyz", "/metrics", "/", "/widget.js", "/demo.css"):
            assert client.get(path).status_code == 200, path


def test_clients_behind_a_trusted_proxy_are_told_apart(limited: Settings,
                                                       fake_encoder: FakeEncoder) -> None:
    with TestClient(create_app(limited, encoder=fake_encoder),
                    client=("10.0.0.1", 5000)) as proxy:
        assert [_ask(proxy, **{"X-Forwarded-For": "1.1.1.1"}) for _ in range(4)] == [
            200, 200, 200, 429]
        assert _ask(proxy, **{"X-Forwarded-For": "2.2.2.2"}) == 200
        # A client cannot escape by forging the header: the proxy appends the real address.
        assert _ask(proxy, **{"X-Forwarded-For": "9.9.9.9, 1.1.1.1"}) == 429


def test_forged_forwarded_for_from_an_untrusted_peer_changes_nothing(
        limited: Settings, fake_encoder: FakeEncoder) -> None:
    with TestClient(create_app(limited, encoder=fake_encoder),
                    client=("10.7.7.7", 5000)) as client:
        codes = [_ask(client, **{"X-Forwarded-For": f"3.3.3.{i}"}) for i in range(4)]
        assert codes == [200, 200, 200, 429]


def test_rate_limit_zero_turns_limiting_off(fake_settings: Settings,
                                            fake_encoder: FakeEncoder) -> None:
    assert fake_settings.rate_limit == 0
    with TestClient(create_app(fake_settings, encoder=fake_encoder)) as client:
        assert {_ask(client) for _ in range(30)} == {200}


def test_the_default_limit_is_on_and_generous() -> None:
    assert Settings().rate_limit == 600


def test_with_collections_each_has_its_own_allowance(collections_file: Path,
                                                     fake_encoder: FakeEncoder) -> None:
    settings = Settings(collections_file=collections_file, rate_limit=1)
    notes = collections_file.read_text("utf-8").replace('access = ["hr"]', 'access = "public"')
    collections_file.write_text(notes, "utf-8")
    with TestClient(create_app(settings, encoder=fake_encoder)) as client:
        ask = {"question": "Who writes in the ledger?"}
        assert client.post("/api/collections/article/ask", json=ask).status_code == 200
        assert client.post("/api/collections/article/ask", json=ask).status_code == 429
        assert client.post("/api/collections/notes/ask", json=ask).status_code == 200
        assert client.post("/api/collections/notes/ask", json=ask).status_code == 429
        # Names that are not declared share one allowance: inventing names buys nothing.
        assert client.post("/api/collections/x1/ask", json=ask).status_code == 404
        assert client.post("/api/collections/x2/ask", json=ask).status_code == 429


def test_a_forbidden_collection_shares_the_unknown_names_allowance(
        collections_file: Path, fake_encoder: FakeEncoder) -> None:
    """Otherwise a fresh allowance would tell a declared name from an invented one."""
    settings = Settings(collections_file=collections_file, rate_limit=1)
    with TestClient(create_app(settings, encoder=fake_encoder)) as client:
        ask = {"question": "Who writes in the ledger?"}
        assert client.post("/api/collections/x1/ask", json=ask).status_code == 404
        assert client.post("/api/collections/notes/ask", json=ask).status_code == 429
        assert client.post("/api/collections/article/ask", json=ask).status_code == 200

"""Signing keys: reading a JWKS, and fetching it from a real loopback server within limits."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator

import anyio
import pytest

from service.http.jwks import (
    InvalidToken,
    JwksKeys,
    KeysUnavailable,
    SharedSecret,
    fetch,
    parse_jwks,
)
from tests.tokens import JwksServer, Key, ec_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server(rsa: Key, ec: Key) -> Iterator[JwksServer]:
    with JwksServer([rsa, ec]) as running:
        yield running


def _document(*entries: dict[str, object]) -> bytes:
    return json.dumps({"keys": list(entries)}).encode()


def test_each_key_is_pinned_to_one_algorithm(rsa: Key, ec: Key) -> None:
    keys = parse_jwks(_document(rsa.jwk(), ec.jwk()))
    assert {kid: key.algorithm for kid, key in keys.items()} == {"rsa-1": "RS256",
                                                                "ec-1": "ES256"}
    # Without "alg" the key type decides; EC by its curve.
    bare = {k: v for k, v in ec.jwk().items() if k != "alg"}
    assert parse_jwks(_document(bare))["ec-1"].algorithm == "ES256"


@pytest.mark.parametrize("change", [
    {"alg": "HS256"},            # an HMAC algorithm on a public key: the classic confusion
    {"alg": "none"},
    {"alg": "ES384"},            # an EC algorithm on an RSA key
    {"use": "enc"},              # an encryption key
    {"kty": "oct", "k": "c2VjcmV0"},  # a symmetric key published for anyone to read
    {"n": 12345},                # not a key at all
])
def test_unusable_keys_are_left_out(rsa: Key, ec: Key, change: dict[str, str]) -> None:
    keys = parse_jwks(_document({**rsa.jwk(), **change}, ec.jwk()))
    assert set(keys) == {"ec-1"}


def test_an_ec_key_cannot_claim_another_curves_algorithm(ec: Key) -> None:
    with pytest.raises(ValueError, match="no usable signing key"):
        parse_jwks(_document({**ec.jwk(), "alg": "ES512"}))


@pytest.mark.parametrize("body", [b"", b"[]", b'{"keys": {}}', b"\xff", b'{"keys": []}',
                                  b'{"keys": ' + b"[" * 100_000])
def test_a_document_without_keys_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_jwks(body)


def test_fetch_reads_at_most_the_limit(server: JwksServer) -> None:
    assert json.loads(fetch(server.url, 5.0, 100_000))["keys"]
    with pytest.raises(ValueError, match="larger than 100 bytes"):
        fetch(server.url, 5.0, 100)


def test_redirects_are_not_followed(server: JwksServer) -> None:
    with pytest.raises(OSError, match="302"):
        fetch(server.url.replace("/jwks", "/moved"), 5.0, 100_000)


def test_keys_are_cached_and_refetched_after_the_ttl(server: JwksServer, rsa: Key) -> None:
    clock = Clock()
    keys = JwksKeys(server.url, ttl=300, min_interval=30, clock=clock)
    assert anyio.run(keys.key_for, "rsa-1").algorithm == "RS256"
    assert anyio.run(keys.key_for, "ec-1").algorithm == "ES256"
    assert server.requests == 1
    clock.now += 301
    # The known key answers at once; the set is fetched again in the background.
    server.keys = [rsa]
    assert anyio.run(keys.key_for, "ec-1").algorithm == "ES256"
    keys.wait_for_background(10)
    assert server.requests == 2
    with pytest.raises(InvalidToken, match="unknown signing key"):  # dropped from the set
        anyio.run(keys.key_for, "ec-1")


def test_an_unknown_kid_refreshes_once_per_interval(server: JwksServer, rsa: Key) -> None:
    clock = Clock()
    keys = JwksKeys(server.url, ttl=300, min_interval=30, clock=clock)
    anyio.run(keys.key_for, "rsa-1")
    # Right after a fetch, made-up kids cost the provider nothing.
    for n in range(20):
        with pytest.raises(InvalidToken, match="unknown signing key"):
            anyio.run(keys.key_for, f"made-up-{n}")
    assert server.requests == 1
    clock.now += 31
    with pytest.raises(InvalidToken, match="unknown signing key"):
        anyio.run(keys.key_for, "made-up")
    assert server.requests == 2, "one refresh"
    with pytest.raises(InvalidToken):
        anyio.run(keys.key_for, "made-up")
    assert server.requests == 2, "then none until the interval has passed"
    # A rotated-in key is found by the refresh its first token triggers.
    server.keys = [*server.keys, ec_key("ec-2")]
    clock.now += 31
    assert anyio.run(keys.key_for, "ec-2").algorithm == "ES256"
    assert server.requests == 3


def test_many_requests_waiting_for_the_first_fetch_share_it(server: JwksServer) -> None:
    keys = JwksKeys(server.url)
    found: list[str] = []

    async def want(kid: str) -> None:
        found.append((await keys.key_for(kid)).algorithm)

    async def crowd() -> None:
        async with anyio.create_task_group() as group:
            for n in range(20):
                group.start_soon(want, "rsa-1" if n % 2 else "ec-1")

    anyio.run(crowd)
    assert sorted(found) == ["ES256"] * 10 + ["RS256"] * 10
    assert server.requests == 1


def test_many_threads_wanting_keys_at_once_fetch_once(server: JwksServer) -> None:
    keys = JwksKeys(server.url, min_interval=30)
    threads = [threading.Thread(target=keys.refresh) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.requests == 1 and keys.fetches == 1


def test_a_provider_outage_keeps_the_last_good_keys(server: JwksServer,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    keys = JwksKeys(server.url, ttl=300, min_interval=30, clock=clock)
    anyio.run(keys.key_for, "rsa-1")
    server.down = True
    clock.now += 301
    with caplog.at_level(logging.WARNING, logger="service.http.jwks"):
        assert anyio.run(keys.key_for, "rsa-1").algorithm == "RS256"
        keys.wait_for_background(10)
    assert server.requests == 2
    assert "keeping the last good set" in caplog.text and server.url not in caplog.text
    # A kid it has never seen cannot be judged while the provider is down: not a bad token.
    clock.now += 31
    with pytest.raises(KeysUnavailable):
        anyio.run(keys.key_for, "rotated-in")


def test_no_keys_at_all_while_the_provider_is_down(server: JwksServer) -> None:
    server.down = True
    keys = JwksKeys(server.url)
    with pytest.raises(KeysUnavailable):
        anyio.run(keys.key_for, "rsa-1")
    with pytest.raises(KeysUnavailable):  # and the retry waits for its interval
        anyio.run(keys.key_for, "rsa-1")
    assert server.requests == 1


def test_an_unreachable_provider_times_out_into_keys_unavailable() -> None:
    with JwksServer([]) as gone:
        url = gone.url
    keys = JwksKeys(url, timeout=1.0)
    with pytest.raises(KeysUnavailable):
        anyio.run(keys.key_for, None)


def test_a_provider_answering_garbage_is_unavailable_not_an_error(server: JwksServer) -> None:
    keys = JwksKeys(server.url.replace("/jwks", "/garbage"))
    with pytest.raises(KeysUnavailable):
        anyio.run(keys.key_for, "rsa-1")


def test_an_overlong_kid_is_refused_before_any_lookup(server: JwksServer) -> None:
    keys = JwksKeys(server.url)
    with pytest.raises(InvalidToken, match="bad key id"):
        anyio.run(keys.key_for, "k" * 300)
    assert server.requests == 0


def test_a_shared_secret_only_ever_verifies_hs256() -> None:
    key = anyio.run(SharedSecret(b"s" * 32).key_for, "anything")
    assert (key.key, key.algorithm) == (b"s" * 32, "HS256")

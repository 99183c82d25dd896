"""Keys that sign bearer tokens: an identity provider's JWKS (fetched, cached, refreshed within
limits) or a shared HS256 secret, each key pinned to the one algorithm it may verify."""

from __future__ import annotations

import http.client
import json
import logging
import math
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.to_thread
import jwt

log = logging.getLogger(__name__)

# Algorithms a public key of each type may verify. HMAC ("oct") keys are never taken from a
# JWKS: a published key set is public, so anyone could sign with it.
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
MAX_KEYS = 100
MAX_KID_CHARS = 256


class InvalidToken(Exception):
    """The token is refused; the message says why and never contains the token."""


class KeysUnavailable(Exception):
    """The identity provider's keys cannot be had right now, so a token cannot be judged."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A key and the only algorithm a token signed with it may name."""

    key: Any
    algorithm: str


class KeySource(Protocol):
    async def key_for(self, kid: str | None) -> SigningKey: ...


class SharedSecret:
    """`QA_JWT_SECRET`: HS256 and nothing else, whatever `kid` the token names."""

    def __init__(self, secret: bytes) -> None:
        self._key = SigningKey(secret, "HS256")

    async def key_for(self, kid: str | None) -> SigningKey:
        return self._key


def parse_jwks(body: bytes) -> dict[str | None, SigningKey]:
    """The usable signing keys of a JWKS document, by `kid`; keys of other uses, HMAC keys,
    unknown types and algorithms that do not fit the key are left out."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ValueError("the JWKS is not JSON") from exc
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("the JWKS has no \"keys\" list")
    keys: dict[str | None, SigningKey] = {}
    for entry in entries[:MAX_KEYS]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        algorithm = _algorithm(entry)
        kid = entry.get("kid")
        if algorithm is None or not (kid is None or isinstance(kid, str)):
            continue
        try:
            key = jwt.PyJWK(entry, algorithm).key
        except Exception:  # whatever a malformed key raises, the key is left out
            continue
        keys[kid] = SigningKey(key, algorithm)
    if not keys:
        raise ValueError("the JWKS holds no usable signing key")
    return keys


def _algorithm(entry: dict[str, Any]) -> str | None:
    declared = entry.get("alg")
    kty = entry.get("kty")
    if kty == "RSA":
        default: str | None = "RS256"
        allowed: frozenset[str] = RSA_ALGORITHMS
    elif kty == "EC":
        default = EC_ALGORITHMS.get(entry.get("crv", ""))
        allowed = frozenset({default} if default else ())
    elif kty == "OKP" and entry.get("crv") in ("Ed25519", "Ed448"):
        default, allowed = "EdDSA", frozenset({"EdDSA"})
    else:
        return None
    if declared is None:
        return default
    return declared if declared in allowed else None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect could lead from the https:// URL that was checked to one that was not.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError (an OSError) for the 3xx


_OPENER = urllib.request.build_opener(_NoRedirects)


def fetch(url: str, timeout: float, max_bytes: int) -> bytes:
    """The body at `url`, refused past `max_bytes`; redirects are not followed (blocking: call
    it from a worker thread)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with _OPENER.open(request, timeout=timeout) as response:
        body: bytes = response.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise ValueError(f"the JWKS is larger than {max_bytes} bytes")
    return body


class JwksKeys:
    """An identity provider's published keys, cached for `ttl` seconds.

    A token naming an unknown `kid` fetches the set again (keys rotate), but never more often
    than once per `min_interval`, so made-up kids cannot make this service hammer the provider.
    Fetches run in a worker thread, never on the event loop; a set past its `ttl` is fetched in
    the background while its keys go on serving. While the provider cannot be reached the last
    good set stays in use; with none, tokens cannot be judged (`KeysUnavailable`).
    """

    def __init__(self, url: str, *, ttl: float = 300.0, min_interval: float = 30.0,
                 timeout: float = 5.0, max_bytes: int = 512 * 1024,
                 clock: Callable[[], float] = time.monotonic,
                 fetcher: Callable[[str, float, int], bytes] = fetch) -> None:
        self.url = url
        self.ttl = ttl
        self.min_interval = min_interval
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._clock = clock
        self._fetch = fetcher
        self._keys: dict[str | None, SigningKey] = {}
        self._fetched_at = -math.inf
        self._attempted_at = -math.inf
        self._failed = False
        self._lock = threading.Lock()
        self._one = anyio.CapacityLimiter(1)
        self._background: threading.Thread | None = None
        self.fetches = 0  # attempts, for tests and the benchmark

    def find(self, kid: str | None) -> SigningKey | None:
        keys = self._keys
        if kid is None and len(keys) == 1:
            return next(iter(keys.values()))
        return keys.get(kid)

    def refresh(self) -> None:
        """Fetch the set now unless another thread just did (blocking)."""
        with self._lock:
            now = self._clock()
            if now - self._attempted_at < self.min_interval:
                return
            self._attempted_at = now
            self.fetches += 1
            try:
                keys = parse_jwks(self._fetch(self.url, self.timeout, self.max_bytes))
            except (OSError, ValueError, http.client.HTTPException) as exc:
                self._failed = True
                # The reason, not the URL (it could carry credentials) nor the body.
                log.warning("could not refresh the JWKS (%s: %s); %s", type(exc).__name__,
                            str(exc)[:200], "keeping the last good set" if self._keys
                            else "tokens cannot be verified until it can be fetched")
                return
            self._keys, self._fetched_at, self._failed = keys, now, False

    def _refresh_in_background(self) -> None:
        # Called from the event loop only, so the check needs no lock.
        if self._background is None or not self._background.is_alive():
            self._background = threading.Thread(target=self.refresh, name="jwks-refresh",
                                                daemon=True)
            self._background.start()

    def wait_for_background(self, timeout: float | None = None) -> None:
        """Until a background refresh under way has finished (for tests and shutdown)."""
        if self._background is not None:
            self._background.join(timeout)

    async def key_for(self, kid: str | None) -> SigningKey:
        if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID_CHARS):
            raise InvalidToken("invalid token: bad key id")
        key = self.find(kid)
        now = self._clock()
        allowed = now - self._attempted_at >= self.min_interval
        if key is not None:
            # Past its time the set is fetched again, while the keys it holds go on serving:
            # nobody waits on the provider for a key already known.
            if allowed and now - self._fetched_at >= self.ttl:
                self._refresh_in_background()
            return key
        if allowed:
            # Requests waiting for the same fetch queue here, not in the thread pool that
            # computes answers; after the first, each finds the fetch done and returns.
            await anyio.to_thread.run_sync(self.refresh, limiter=self._one)
            key = self.find(kid)
            if key is not None:
                return key
        if self._failed:
            raise KeysUnavailable("cannot verify tokens right now: the identity provider's "
                                  "keys could not be fetched")
        raise InvalidToken("invalid token: unknown signing key")

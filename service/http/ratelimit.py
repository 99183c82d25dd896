"""Per-client rate limiting: a bounded token-bucket table, client identity, and the ASGI gate."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Protocol

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from service.http.identity import Identity

# Liveness, readiness and scrapes come from the operator's own machinery; limiting them would
# make an abusive client look like an outage. The widget's static files are cheap and cached,
# and many intranet users share one address behind a proxy: they must not use up each other's
# question allowance by loading a page.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/", "/widget.js", "/demo.css"})


class RateLimiter:
    """Token buckets keyed by client: `per_minute` requests a minute, bursts up to `burst`.

    Thread-safe (routes run in a thread pool) and bounded: past `max_clients` keys the least
    recently seen is forgotten, which can only ever give that client a fresh allowance.
    """

    def __init__(self, per_minute: float, *, burst: float | None = None,
                 max_clients: int = 16_384, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive; switch the limiter off instead")
        if max_clients < 1:
            raise ValueError("max_clients must be at least 1")
        self.per_minute = per_minute
        self.burst = burst if burst is not None else max(1.0, per_minute)
        self.max_clients = max_clients
        self._rate = per_minute / 60.0
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _level(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self._rate)

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may make a request; 0.0 when it may now. Consumes nothing."""
        with self._lock:
            tokens = self._level(key, self._clock())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self._rate

    def hit(self, key: str) -> float:
        """Take one request's token: 0.0 when allowed, else the seconds to wait (nothing taken)."""
        with self._lock:
            now = self._clock()
            tokens = self._level(key, now)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)
            self._buckets.move_to_end(key)
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return 0.0 if allowed else (1.0 - tokens) / self._rate

    def reset(self, key: str) -> None:
        """Forget `key` (e.g. after a successful login following failures)."""
        with self._lock:
            self._buckets.pop(key, None)

    # The event loop's interface, shared with the Redis-backed limiter (service.http.sharedlimits).
    async def take(self, key: str) -> float:
        return self.hit(key)

    async def peek(self, key: str) -> float:
        return self.retry_after(key)

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after_header(seconds: float) -> str:
    """A `Retry-After` value: whole seconds, never 0 (clients treat 0 as "hammer again")."""
    return str(max(1, math.ceil(seconds)))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientIdentity:
    """The client a request stands for: its peer address, or, when the peer is a trusted proxy,
    the nearest untrusted address in `X-Forwarded-For` (read right to left, since everything
    left of the last trusted hop is whatever the client chose to send)."""

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(p.strip(), strict=False) for p in trusted_proxies if p.strip())

    def trusts(self, address: str) -> bool:
        """Whether `address` is one of the trusted proxies."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def of(self, scope: Scope) -> str:
        """The rate-limit key: the client's address (its /64 for IPv6)."""
        return _bucket_key(self.address(scope))

    def address(self, scope: Scope) -> str:
        client = scope.get("client")
        peer = str(client[0]) if client else "unknown"
        if not self.networks or not self.trusts(peer):
            return peer
        forwarded = [v for k, v in scope.get("headers", ()) if k == b"x-forwarded-for"]
        hops: list[str] = [h.strip() for v in forwarded for h in v.decode("latin-1").split(",")]
        for hop in reversed(hops):
            if not hop:
                continue
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break  # a proxy we trust wrote garbage: fall back to the last good hop
            if not self.trusts(hop):
                return hop
            peer = hop
        return peer


def limit_key(scope: Scope, identity: ClientIdentity) -> str:
    """Whom a request counts against: its verified user (set by service.http.auth), else its
    address. Users share no bucket with addresses, and their names stay out of the keys (they
    reach Redis): a digest stands in."""
    who = scope.get("state", {}).get("identity")
    if isinstance(who, Identity) and who.user is not None:
        return "user:" + hashlib.sha256(who.user.encode()).hexdigest()[:32]
    return identity.of(scope)


def _bucket_key(address: str) -> str:
    # One IPv6 host usually owns a whole /64; keying by full address would let it rotate
    # through 2^64 fresh buckets.
    if ":" not in address:
        return address
    try:
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    except ValueError:
        return address


class Limiter(Protocol):
    """What the middleware needs of a limiter: a per-process or a Redis-shared one."""

    per_minute: float

    async def take(self, key: str) -> float: ...

    async def peek(self, key: str) -> float: ...


class RateLimitMiddleware:
    """Answers 429 with `Retry-After` once a client passes its allowance (pure ASGI).

    The 429 is held back `delay` seconds (never past the time it names): a client hammering
    over keep-alive connections then costs the server a sleeping coroutine per connection
    instead of a request parse per microsecond, so the others do not feel it.
    """

    def __init__(self, app: ASGIApp, limiter: Limiter, identity: ClientIdentity,
                 exempt: frozenset[str] = EXEMPT_PATHS, delay: float = 1.0,
                 collection: Callable[[Scope], str | None] | None = None) -> None:
        self.app = app
        # The collection a request is counted in (None for other paths): each client's
        # allowance is then counted per collection.
        self.collection = collection
        self.limiter = limiter
        self.identity = identity
        self.exempt = exempt
        self.delay = delay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        client = limit_key(scope, self.identity)
        if self.collection is not None:
            client = f"{self.collection(scope) or ''}|{client}"
        wait = await self.limiter.take(client)
        if wait == 0.0:
            await self.app(scope, receive, send)
            return
        if self.delay > 0:
            await anyio.sleep(min(wait, self.delay))
            wait = await self.limiter.peek(client)
        per_minute = f"{self.limiter.per_minute:g}"
        body = json.dumps({"detail": f"too many requests: the limit is {per_minute} a minute "
                                     f"per client; retry in {retry_after_header(wait)} s"}).encode()
        await send({"type": "http.response.start", "status": 429,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"retry-after", retry_after_header(wait).encode())]})
        await send({"type": "http.response.body", "body": body})

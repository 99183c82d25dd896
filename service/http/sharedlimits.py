"""Rate limits shared by every process and replica through Redis (QA_REDIS_URL), falling back
to per-process limits while Redis cannot be reached."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import redis
import redis.asyncio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.http.ratelimit import RateLimiter

log = logging.getLogger(__name__)

# One token bucket per key, refilled and taken in one atomic step, on Redis's clock (replicas'
# clocks may disagree). Returns {1 if a token was taken, seconds until one is available}; the
# seconds travel as a string because Redis truncates Lua numbers to integers. Cost 0 only looks.
TOKEN_BUCKET = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil or at == nil then
  tokens, at = burst, now
end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local taken = 0
if cost > 0 and tokens >= cost then
  tokens = tokens - cost
  taken = 1
end
if cost > 0 then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
end
local wait = 0
if tokens < 1 then
  wait = (1 - tokens) / rate
end
return {taken, tostring(wait)}
"""

Mode = Literal["per-process", "shared", "per-process (Redis unreachable)"]
Errors = (redis.RedisError, OSError)


class SharedLimiter:
    """Token buckets in Redis with `RateLimiter`'s interface and semantics, the same for every
    process that uses the same Redis and `namespace`.

    Every Redis call has a short timeout. When one fails, this process counts on `local` for
    `recheck` seconds before trying Redis again, so a dead Redis costs one timeout per
    `recheck`, never an answer. Sync methods are for worker threads, async ones for the loop.
    """

    def __init__(self, url: str, local: RateLimiter, namespace: str, *,
                 timeout: float = 0.25, recheck: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.local = local
        self.per_minute = local.per_minute
        self.namespace = namespace
        self.recheck = recheck
        self._args = (local.per_minute / 60.0, local.burst)
        options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        self._sync = redis.Redis.from_url(url, **options)
        self._async = redis.asyncio.Redis.from_url(url, **options)
        self._sync_script = self._sync.register_script(TOKEN_BUCKET)
        self._async_script = self._async.register_script(TOKEN_BUCKET)
        self._clock = clock
        self._down_until = 0.0
        self._lock = threading.Lock()
        self.fallbacks = 0  # times Redis was found unreachable

    def _key(self, key: str) -> str:
        return f"qa:ratelimit:{self.namespace}:{key}"

    @property
    def mode(self) -> Mode:
        return "per-process (Redis unreachable)" if self._down() else "shared"

    def _down(self) -> bool:
        return self._clock() < self._down_until

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            if not self._down():
                self.fallbacks += 1
                log.warning("Redis unreachable (%s): rate limits are per process for the next "
                            "%g s", type(exc).__name__, self.recheck)
            self._down_until = self._clock() + self.recheck

    def _result(self, reply: Any) -> tuple[bool, float]:
        taken, wait = reply
        return int(taken) == 1, float(wait)

    def hit(self, key: str) -> float:
        if not self._down():
            try:
                taken, wait = self._result(self._sync_script(
                    keys=[self._key(key)], args=[*self._args, 1]))
                return 0.0 if taken else wait
            except Errors as exc:
                self._failed(exc)
        return self.local.hit(key)

    def retry_after(self, key: str) -> float:
        if not self._down():
            try:
                return self._result(self._sync_script(
                    keys=[self._key(key)], args=[*self._args, 0]))[1]
            except Errors as exc:
                self._failed(exc)
        return self.local.retry_after(key)

    def reset(self, key: str) -> None:
        self.local.reset(key)
        if not self._down():
            try:
                self._sync.delete(self._key(key))
            except Errors as exc:
                self._failed(exc)

    async def take(self, key: str) -> float:
        if not self._down():
            try:
                taken, wait = self._result(await self._async_script(
                    keys=[self._key(key)], args=[*self._args, 1]))
                return 0.0 if taken else wait
            except Errors as exc:
                self._failed(exc)
        return self.local.hit(key)

    async def peek(self, key: str) -> float:
        if not self._down():
            try:
                return self._result(await self._async_script(
                    keys=[self._key(key)], args=[*self._args, 0]))[1]
            except Errors as exc:
                self._failed(exc)
        return self.local.retry_after(key)

    def check(self) -> Mode:
        """Ask Redis now (a worker-thread call, for /readyz) when it was last found down."""
        if self._down():
            try:
                self._sync.ping()
                with self._lock:
                    self._down_until = 0.0
                log.info("Redis reachable again: rate limits are shared")
            except Errors:
                pass
        return self.mode


def limiter(url: str | None, per_minute: float, namespace: str) -> RateLimiter | SharedLimiter:
    """A per-process limiter, or a Redis-shared one when `url` is set."""
    local = RateLimiter(per_minute)
    return local if url is None else SharedLimiter(url, local, namespace)


def mode_of(limiters: list[RateLimiter | SharedLimiter]) -> Mode:
    """How the limits of this process are enforced right now (for /readyz)."""
    shared = [lim for lim in limiters if isinstance(lim, SharedLimiter)]
    if not shared:
        return "per-process"
    modes = {lim.check() for lim in shared}
    return "shared" if modes == {"shared"} else "per-process (Redis unreachable)"


class LimiterCollector(Collector):
    """`qa_rate_limit_shared` (1 while Redis holds the buckets, 0 while this process falls
    back to its own) and how often it fell back."""

    def __init__(self, limiters: list[SharedLimiter]) -> None:
        self.limiters = limiters

    def collect(self) -> Iterator[Metric]:
        shared = GaugeMetricFamily("qa_rate_limit_shared", "1 while rate limits are shared "
                                   "through Redis, 0 while this process uses its own.",
                                   labels=["limit"])
        fallbacks = CounterMetricFamily("qa_rate_limit_fallbacks", "Times this process found "
                                        "Redis unreachable and fell back to its own limits.",
                                        labels=["limit"])
        for lim in self.limiters:
            shared.add_metric([lim.namespace], 1 if lim.mode == "shared" else 0)
            fallbacks.add_metric([lim.namespace], lim.fallbacks)
        yield shared
        yield fallbacks

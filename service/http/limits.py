"""Request limits: body size on the bytes received, and answering concurrency and time."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable

import anyio
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

# The routes that retrieve and compose an answer: the only ones whose cost grows under load.
ANSWER_PATHS = frozenset({"/api/ask", "/api/chat"})
_COLLECTION_PREFIX = "/api/collections/"


def answering(path: str) -> bool:
    """/api/ask, /api/chat, or a collection's /api/collections/NAME/ask or /chat."""
    if path in ANSWER_PATHS:
        return True
    if not path.startswith(_COLLECTION_PREFIX):
        return False
    name, _, rest = path[len(_COLLECTION_PREFIX):].partition("/")
    return bool(name) and rest in ("ask", "chat")


class ErrorBody(BaseModel):
    """FastAPI's error shape, for the schema."""

    detail: str


_RETRY = {"Retry-After": {"description": "Seconds to wait before retrying.",
                          "schema": {"type": "integer"}}}
# The refusals any route may give besides its own, for the OpenAPI schema
# (`FastAPI(responses=...)`); 400 is FastAPI's answer to a body it cannot decode.
REFUSALS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorBody, "description": "The request body could not be parsed."},
    408: {"model": ErrorBody, "description": "The request body arrived too slowly."},
    413: {"model": ErrorBody, "description": "The request body is over the size limit."},
    429: {"model": ErrorBody, "description": "Too many requests from this client.",
          "headers": _RETRY},
    503: {"model": ErrorBody, "description": "Not ready, busy, or the answer took too long.",
          "headers": _RETRY},
}


class BodyLimitMiddleware:
    """Answers 413 once a request body passes `limit` bytes, whatever Content-Length claims.

    The body is read (up to the limit) before the app sees it, so a route never starts work
    on a request that will be refused. `overrides` maps path prefixes to their own limits; one
    above `limit` applies only to requests `trusted` accepts (checked on the headers, before a
    byte of the body is read), so an outsider never gets more than `limit` buffered.
    """

    def __init__(self, app: ASGIApp, limit: int, overrides: dict[str, int] | None = None,
                 trusted: Callable[[Scope], bool] | None = None, timeout: float = 60.0):
        self.app = app
        self.limit = limit
        self.overrides = overrides or {}
        self.trusted = trusted
        # uvicorn has no body read timeout: a client trickling a body would hold its
        # connection and buffer for as long as it likes.
        self.timeout = timeout

    def _limit_for(self, scope: Scope) -> int:
        for prefix, limit in self.overrides.items():
            if scope["path"].startswith(prefix):
                if limit <= self.limit or (self.trusted is not None and self.trusted(scope)):
                    return limit
                return self.limit
        return self.limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        # A loop timer that cancels this task, not a cancel scope: ~2 µs instead of ~60 µs on
        # every request, for a timeout that almost never fires.
        task = asyncio.current_task()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            if task is not None:
                task.cancel()

        timer = asyncio.get_running_loop().call_later(self.timeout, expire)
        try:
            while more and size <= limit:
                try:
                    message = await receive()
                except asyncio.CancelledError:
                    if not expired or task is None:
                        raise
                    task.uncancel()
                    break
                if message["type"] == "http.disconnect":
                    return  # the client left: nobody to answer (logged as 499, not an error)
                body = message.get("body", b"")
                size += len(body)
                chunks.append(body)
                more = message.get("more_body", False)
        finally:
            timer.cancel()
        if size > limit:
            await _too_large(send, limit)
            return
        if more:
            await refuse(send, 408, f"the request body did not arrive within {self.timeout:g} s",
                         [(b"connection", b"close")])
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    await refuse(send, 413, f"request body is over the {limit:,}-byte limit",
                 [(b"connection", b"close")])


async def refuse(send: Send, status: int, detail: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A complete JSON error response in FastAPI's `{"detail": ...}` shape."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class Capacity:
    """How many answers are computed at once. A request beyond `limit` waits up to `queue_wait`
    seconds for a slot (at most `limit` of them wait), then is turned away.

    Used only from the event loop, so plain counters need no lock.
    """

    def __init__(self, limit: int, queue_wait: float = 0.25) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.queue_wait = queue_wait
        self.in_flight = 0
        self._waiters: deque[anyio.Event] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> bool:
        """Take a slot; False when none came free in time."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return True
        if self.queue_wait <= 0 or len(self._waiters) >= self.limit:
            return False
        event = anyio.Event()
        self._waiters.append(event)
        try:
            with anyio.move_on_after(self.queue_wait):
                await event.wait()
        except BaseException:
            self._give_up(event)
            raise
        if event.is_set():
            return True
        self._give_up(event)
        return False

    def _give_up(self, event: anyio.Event) -> None:
        if event.is_set():
            self.release()  # a slot was handed over just as we stopped waiting
        else:
            self._waiters.remove(event)

    def release(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()  # the slot passes straight to the oldest waiter
        else:
            self.in_flight -= 1


class AnswerLimitMiddleware:
    """Bounds the answering routes: a full `capacity` answers 503 at once instead of queueing,
    and an answer not started within `timeout` seconds answers 503.

    A route running in a worker thread cannot be interrupted, so on timeout the 503 goes out
    while the work finishes unseen; it keeps its slot until then, so abandoned work still
    counts against the capacity. The timer is a loop callback rather than a task per request:
    a task group would cost ~50 µs on every answer, the callback ~2 µs.
    """

    def __init__(self, app: ASGIApp, capacity: Capacity, timeout: float,
                 paths: Callable[[str], bool] = answering) -> None:
        self.app = app
        self.capacity = capacity
        self.timeout = timeout
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.paths(scope["path"]):
            await self.app(scope, receive, send)
            return
        if not await self.capacity.acquire():
            log.warning("answering capacity (%d) full: refused", self.capacity.limit)
            await refuse(send, 503, "the service is busy; retry in a moment",
                         [(b"retry-after", b"1")])
            return
        deadline = _Deadline(send, self.timeout)
        timer = asyncio.get_running_loop().call_later(self.timeout, deadline.expire)
        try:
            await self.app(scope, receive, deadline.send)
        finally:
            timer.cancel()
            self.capacity.release()
            if deadline.late is not None:
                await deadline.late


class _Deadline:
    """Passes a route's messages through until the deadline; after it, sends the 503 instead."""

    def __init__(self, send: Send, timeout: float) -> None:
        self._send = send
        self.timeout = timeout
        self.started = False
        self.expired = False
        self.late: asyncio.Task[None] | None = None

    async def send(self, message: Message) -> None:
        if self.expired:
            return  # the client already has its 503
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    def expire(self) -> None:
        if self.started:
            return  # the answer is already on its way; let it finish
        self.expired = True
        log.warning("no answer within %g s: answered 503", self.timeout)
        self.late = asyncio.ensure_future(refuse(
            self._send, 503, f"no answer within {self.timeout:g} s; retry in a moment",
            [(b"retry-after", b"2")]))

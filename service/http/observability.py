"""Prometheus metrics, request ids, access logs and the headers every response carries."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as render
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.library import Library
from service.http.limits import Capacity, answering, refuse
from service.http.logging_config import REQUEST_ID
from service.qa.engine import Engine, NotReady

access_log = logging.getLogger("service.access")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "<unmatched>"
# The widget's files change only with a deploy; a short lifetime keeps pages fast yet fresh.
STATIC_PATHS = frozenset({"/", "/widget.js", "/demo.css"})
STATIC_PREFIX = "/static/"
STATIC_CACHE = b"public, max-age=300"
NO_STORE = b"no-store"
# nginx's code for "client closed request": the client left before the response began.
CLIENT_CLOSED = 499
_SANE_ID = re.compile(r"[A-Za-z0-9._:=+/-]{1,128}", re.ASCII)


class Metrics:
    """Every metric of one app, in its own registry (tests build many apps in one process).

    With `shared_dir` (several worker processes, prometheus_client in multiprocess mode) the
    counters, histograms and answering gauges live in files there, and a scrape of any worker
    sums every worker's; the index figures and `process_*` are the answering worker's own.
    """

    def __init__(self, engine: Engine, capacity: Capacity | None = None,
                 shared_dir: Path | None = None, library: Library | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # In multiprocess mode the values are read back from the files, so the metric objects
        # must not be in the exposed registry as well (they would be counted twice).
        own = CollectorRegistry() if shared_dir is not None else self.registry
        self.requests = Counter("qa_http_requests", "HTTP requests by route template and status.",
                                ["method", "route", "status"], registry=own)
        self.latency = Histogram("qa_http_request_duration_seconds",
                                 "Time from request to the end of the response.",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=own)
        self.answers = Counter("qa_answers", "Answers given, by route and outcome "
                               "(answered, or declined because the text does not say).",
                               ["route", "outcome"], registry=own)
        # Per collection, labelled only once the caller was let in: a probe of an unknown or
        # forbidden name adds no series.
        self.collection_requests = Counter(
            "qa_collection_requests", "Requests served from a collection, by collection and "
            "status.", ["collection", "status"], registry=own)
        self.collection_answers = Counter(
            "qa_collection_answers", "Answers given, by collection and outcome.",
            ["collection", "outcome"], registry=own)
        if shared_dir is not None:
            MultiProcessCollector(self.registry, path=str(shared_dir))  # type: ignore[no-untyped-call]
        self.registry.register(_ServingCollector(
            engine, None if isinstance(capacity, SharedCapacity) else capacity))
        if library is not None:
            self.registry.register(_CollectionsCollector(library))
        ProcessCollector(registry=self.registry)
        # `labels()` validates and locks on every call; the label sets seen are few and fixed.
        self._request_children: dict[tuple[str, str, int], Callable[[], None]] = {}
        self._latency_children: dict[tuple[str, str], Callable[[float], None]] = {}
        self._answer_children: dict[tuple[str, str], Callable[[], None]] = {}
        self._collection_children: dict[tuple[str, int], Callable[[], None]] = {}
        self._collection_answer_children: dict[tuple[str, str], Callable[[], None]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        inc = self._request_children.get((method, route, status))
        if inc is None:
            inc = self.requests.labels(method, route, str(status)).inc
            self._request_children[(method, route, status)] = inc
        inc()
        observe = self._latency_children.get((method, route))
        if observe is None:
            observe = self.latency.labels(method, route).observe
            self._latency_children[(method, route)] = observe
        observe(seconds)

    def answer(self, route: str, outcome: str) -> None:
        inc = self._answer_children.get((route, outcome))
        if inc is None:
            inc = self._answer_children[(route, outcome)] = self.answers.labels(route, outcome).inc
        inc()

    def collection(self, name: str, status: int, outcome: str | None) -> None:
        # Names are the declared collections only (set once the caller was let in): few.
        inc = self._collection_children.get((name, status))
        if inc is None:
            inc = self.collection_requests.labels(name, str(status)).inc
            self._collection_children[(name, status)] = inc
        inc()
        if outcome is not None:
            answered = self._collection_answer_children.get((name, outcome))
            if answered is None:
                answered = self.collection_answers.labels(name, outcome).inc
                self._collection_answer_children[(name, outcome)] = answered
            answered()

    def exposition(self) -> bytes:
        return render(self.registry)


class SharedCapacity(Capacity):
    """A `Capacity` that also writes its counts to multiprocess gauges, so /metrics shows the
    answers in flight and waiting summed over live workers, whichever worker is scraped."""

    def __init__(self, limit: int, queue_wait: float = 0.25) -> None:
        super().__init__(limit, queue_wait)
        self._in_flight = Gauge("qa_answers_in_flight", "Answers being computed now.",
                                registry=None, multiprocess_mode="livesum")
        self._waiting = Gauge("qa_answers_waiting", "Requests waiting for a free slot.",
                              registry=None, multiprocess_mode="livesum")

    async def acquire(self) -> bool:
        if self.in_flight >= self.limit or self.waiting:
            self._waiting.set(self.waiting + 1)  # about to queue inside the base class
        try:
            return await super().acquire()
        finally:
            self._publish()

    def release(self) -> None:
        super().release()
        self._publish()

    def _publish(self) -> None:
        self._in_flight.set(self.in_flight)
        self._waiting.set(self.waiting)


def worker_exited(shared_dir: Path | None) -> None:
    """Drop this worker's live gauges from the shared files when it stops."""
    if shared_dir is not None:
        mark_process_dead(os.getpid(), str(shared_dir))  # type: ignore[no-untyped-call]


class _ServingCollector(Collector):
    """Index and capacity figures, read at scrape time so they are never stale."""

    def __init__(self, engine: Engine, capacity: Capacity | None) -> None:
        self.engine = engine
        self.capacity = capacity
        self._build_seconds: dict[str, float] = {}

    def collect(self) -> Iterator[Metric]:
        try:
            snapshot = self.engine.snapshot
        except NotReady:
            snapshot = None
        yield GaugeMetricFamily("qa_index_ready", "1 once an index version is being served.",
                                value=1 if snapshot else 0)
        if snapshot is not None:
            manifest = snapshot.index.manifest
            info = InfoMetricFamily("qa_index", "The index version being served.",
                                    labels=["version", "model", "encoder"])
            info.add_metric([snapshot.version, str(manifest.get("model", {}).get("name", "")),
                             str(manifest.get("encoder", {}).get("kind", ""))], {})
            yield info
            yield GaugeMetricFamily("qa_index_documents", "Documents in the served index.",
                                    value=len(snapshot.index.documents))
            yield GaugeMetricFamily("qa_index_chunks", "Passages in the served index.",
                                    value=len(snapshot.index.chunks))
        builds = GaugeMetricFamily("qa_index_build_seconds",
                                   "How long building each index version on disk took.",
                                   labels=["version"])
        for version, seconds in self._builds():
            builds.add_metric([version], seconds)
        yield builds
        if self.capacity is not None:
            yield GaugeMetricFamily("qa_answers_in_flight", "Answers being computed now.",
                                    value=self.capacity.in_flight)
            yield GaugeMetricFamily("qa_answers_waiting", "Requests waiting for a free slot.",
                                    value=self.capacity.waiting)

    def _builds(self) -> list[tuple[str, float]]:
        folder = self.engine.index_dir / "versions"
        found = []
        for path in sorted(folder.glob("*/build.json")):
            version = path.parent.name
            if version not in self._build_seconds:
                seconds = _read_seconds(path)
                if seconds is None:
                    continue
                self._build_seconds[version] = seconds  # a build report never changes
            found.append((version, self._build_seconds[version]))
        for gone in set(self._build_seconds) - {v for v, _ in found}:
            self._build_seconds.pop(gone, None)  # scrapes may run in two threads at once
        return found


class _CollectionsCollector(Collector):
    """Each collection's served version and size, read at scrape time."""

    def __init__(self, library: Library) -> None:
        self.library = library

    def collect(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily("qa_collection_ready", "1 once the collection's index is "
                                  "being served.", labels=["collection"])
        info = InfoMetricFamily("qa_collection_index", "The index version each collection "
                                "serves.", labels=["collection", "version"])
        documents = GaugeMetricFamily("qa_collection_documents", "Documents in each "
                                      "collection's served index.", labels=["collection"])
        chunks = GaugeMetricFamily("qa_collection_chunks", "Passages in each collection's "
                                   "served index.", labels=["collection"])
        for shelf in self.library:
            try:
                snapshot = shelf.engine.snapshot
            except NotReady:
                ready.add_metric([shelf.name], 0)
                continue
            ready.add_metric([shelf.name], 1)
            info.add_metric([shelf.name, snapshot.version], {})
            documents.add_metric([shelf.name], len(snapshot.index.documents))
            chunks.add_metric([shelf.name], len(snapshot.index.chunks))
        yield from (ready, info, documents, chunks)


def _read_seconds(path: Path) -> float | None:
    try:
        seconds = json.loads(path.read_text("utf-8")).get("seconds")
    except (OSError, ValueError, AttributeError):
        return None
    return float(seconds) if isinstance(seconds, int | float) else None


def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: Prometheus text format."""
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def request_id(scope: Scope) -> str:
    """The caller's `X-Request-ID` when it is short and plain, else a fresh one."""
    for key, value in scope.get("headers", ()):
        if key == b"x-request-id":
            text: str = value.decode("latin-1")
            if _SANE_ID.fullmatch(text):
                return text
            break
    return os.urandom(16).hex()


def cache_control(path: str, status: int) -> bytes:
    if status == 200 and (path in STATIC_PATHS or path.startswith(STATIC_PREFIX)):
        return STATIC_CACHE
    return NO_STORE


class ObservabilityMiddleware:
    """Outermost layer: request id (context, log lines and response header), security and
    cache headers, one access log line and the request metrics, for every response including
    the ones the limits refuse. Pure ASGI: a few microseconds per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute],
                 client: Callable[[Scope], str], log_questions: bool = False,
                 max_body: int = 65_536) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.client = client
        self.log_questions = log_questions
        self.max_body = max_body
        self._templates: list[tuple[re.Pattern[str], str]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = request_id(scope)
        token = REQUEST_ID.set(rid)
        path: str = scope["path"]
        status = 500
        responded = False
        outcome: str | None = None
        answers = answering(path)
        body: list[bytes] | None = [] if self.log_questions and answers else None

        async def send_wrapper(message: Message) -> None:
            nonlocal status, outcome, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                headers = list(message.get("headers", ()))
                names = {k.lower() for k, _ in headers}
                headers.append((b"x-request-id", rid.encode()))
                if b"x-content-type-options" not in names:
                    headers.append((b"x-content-type-options", b"nosniff"))
                if b"cache-control" not in names:
                    headers.append((b"cache-control", cache_control(path, status)))
                message = {**message, "headers": headers}
            elif answers and status == 200 and outcome is None:
                # The route is the one place that knows; reading its compact JSON keeps
                # metrics out of the routes. Inside a JSON string a quote is always escaped,
                # so these bytes can only be the top-level key.
                chunk = message.get("body", b"")
                if b'"answered":true' in chunk:
                    outcome = "answered"
                elif b'"answered":false' in chunk:
                    outcome = "declined"
            await send(message)

        async def receive_wrapper() -> Message:
            message = await receive()
            if body is not None and sum(map(len, body)) <= self.max_body:
                body.append(message.get("body", b""))
            return message

        try:
            await self.app(scope, receive if body is None else receive_wrapper, send_wrapper)
            if not responded:
                status = CLIENT_CLOSED  # the app stopped because the client left mid-request
        except ClientDisconnect:
            if not responded:
                status = CLIENT_CLOSED  # nobody is left to answer: not a server error
        except Exception:
            if not responded:
                # Answer in the usual shape and headers; the server still logs the traceback.
                await refuse(send_wrapper, 500, f"internal error (request id {rid})")
                status = 500
            raise
        finally:
            seconds = time.perf_counter() - started
            route = self._route(scope)
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            self.metrics.observe(method, route, status, seconds)
            if outcome is not None:
                self.metrics.answer(route, outcome)
            collection = scope.get("state", {}).get("collection")
            if isinstance(collection, str):
                self.metrics.collection(collection, status, outcome)
            # A flood of 429s or of aborted requests is counted in the metrics, but must not
            # flood the logs too.
            level = (logging.ERROR if status >= 500 else
                     logging.DEBUG if status in (429, CLIENT_CLOSED) else logging.INFO)
            if access_log.isEnabledFor(level):
                extra: dict[str, object] = {
                    "method": method, "path": path[:200], "route": route, "status": status,
                    "ms": round(seconds * 1000, 2), "client": self.client(scope)}
                if outcome is not None:
                    extra["outcome"] = outcome
                if isinstance(collection, str):
                    extra["collection"] = collection
                if body:
                    question = _question(b"".join(body))
                    if question is not None:
                        extra["question"] = question
                access_log.log(level, "%s %s %d", method, path[:200], status, extra=extra)
            REQUEST_ID.reset(token)

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None:
            return str(getattr(route, "path", UNMATCHED))
        # Refused before routing (413, 429, 503): name it by the route it was meant for.
        if self._templates is None:
            self._templates = _templates(self.routes)
        path = scope["path"]
        for regex, template in self._templates:
            if regex.match(path):
                return template
        return UNMATCHED


def _templates(routes: Sequence[BaseRoute]) -> list[tuple[re.Pattern[str], str]]:
    """Every route's path pattern and template, looking inside included routers."""
    found: list[tuple[re.Pattern[str], str]] = []
    for route in routes:
        nested = getattr(getattr(route, "original_router", None), "routes", None)
        if nested is not None:
            found += _templates(nested)
        elif hasattr(route, "path_regex") and hasattr(route, "path"):
            found.append((route.path_regex, str(route.path)))
    return found


def _question(raw: bytes) -> str | None:
    """The question in an /api/ask or /api/chat body, for the log line (opt-in only)."""
    try:
        data = json.loads(raw)
        if "messages" in data:
            data = data["messages"][-1]
            return str(data["content"])[:1000]
        return str(data["question"])[:1000]
    except (ValueError, TypeError, KeyError, IndexError, RecursionError):
        return None

"""The ASGI app factory: `uvicorn --factory service.app:create_app`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.catalog import CatalogError, read_catalog
from service.http import feedback
from service.http.admin import Admin
from service.http.admin import router as admin_router
from service.http.api import router
from service.http.auth import AuthConfigError, AuthMiddleware, RefusalMiddleware, authenticator
from service.http.cors import CollectionCORSMiddleware
from service.http.library import Library
from service.http.limits import REFUSALS, AnswerLimitMiddleware, BodyLimitMiddleware, Capacity
from service.http.observability import (
    Metrics,
    ObservabilityMiddleware,
    SharedCapacity,
    metrics_endpoint,
    worker_exited,
)
from service.http.ratelimit import ClientIdentity, RateLimitMiddleware
from service.http.sharedlimits import LimiterCollector, SharedLimiter, limiter
from service.http.web import router as web_router
from service.index import store
from service.index.encoder import (
    Encoder,
    EncoderError,
    OnnxEncoder,
    describe_model,
    preload_tokenizer,
)
from service.qa.engine import ReloadWatcher
from service.qa.retrieval import check_compatible
from service.settings import InvalidSettings, Settings, from_environment
from service.usage import records
from service.usage.recorder import Recorder, RecorderCollector

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The service cannot start; the message says what to run."""


def check_startup(settings: Settings, encoder: Encoder | None = None,
                  collection: str | None = None) -> None:
    """Fail at boot, with the fix in the message, when there is nothing usable to serve.
    `collection` names the collection these settings serve, when a collections file is used."""
    index_dir, corpus_dir = settings.index_dir, settings.corpus_dir
    where, run = "", "`make index` (or `make serve`)"
    if collection is not None:
        where = f"collection {collection!r}: "
        run = f"`python scripts/build_index.py --collection {collection}` (or `make serve`)"
    version = store.current_version(index_dir)
    if version is None:
        if not corpus_dir.is_dir() or not any(corpus_dir.iterdir()):
            raise StartupError(
                f"{where}no index in {index_dir}/ and no documents in {corpus_dir}/: put .txt, "
                f".md, .html or .jsonl files in {corpus_dir}/ and run {run}")
        raise StartupError(f"{where}no index in {index_dir}/: run {run}")
    manifest = store.read_manifest(index_dir / "versions" / version)
    model = encoder.model if encoder else describe_model(settings.model_dir)
    try:
        check_compatible(manifest, model, encoder.kind if encoder else settings.encoder,
                         settings.chunk_chars)
    except store.IndexUnavailable as exc:
        if collection is None:
            raise
        raise store.IndexUnavailable(f"{where}{exc}") from exc


def preload_for_workers(settings: Settings) -> int:
    """In a launcher about to fork its workers: load what each of them would otherwise load
    alike and then only read, the tokenizer of every collection's current encoder, so they
    share one copy. Returns how many were loaded. Whatever cannot be had here (no index yet, a
    bad catalog, a damaged file) is left to the workers, which load, check and report it as
    without this; a worker whose index names other bytes loads its own."""
    loaded = 0
    try:
        model = describe_model(settings.model_dir)
        collections = read_catalog(settings)
    except (CatalogError, EncoderError, OSError, ValueError) as exc:
        log.debug("nothing preloaded for the workers: %s", exc)
        return 0
    for collection in collections:
        index_dir = collection.index_dir
        try:
            version = store.current_version(index_dir)
            if version is None:
                continue
            record = store.read_manifest(index_dir / "versions" / version).get("encoder", {})
            if record.get("kind") != OnnxEncoder.kind:
                continue
            folder, _ = store.encoder_files(index_dir, record)
            preload_tokenizer(folder, model)
            loaded += 1
        # tokenizers raises a plain Exception for a file it cannot parse.
        except Exception as exc:
            log.debug("%s: tokenizer not preloaded for the workers: %s", collection.name, exc)
    return loaded


def load_settings() -> Settings:
    """Settings from the environment. A bad value stops the boot naming the variable, never
    echoing the value: it may be the admin token."""
    try:
        return from_environment()
    except InvalidSettings as exc:
        raise StartupError(str(exc)) from None


def _safe(text: object) -> str:
    # Lone surrogates cannot be encoded as UTF-8; never let them reach the response.
    return str(text).encode("utf-8", "replace").decode("utf-8")


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 in FastAPI's shape, without echoing the input back (it may be huge or unencodable)."""
    assert isinstance(exc, RequestValidationError)
    detail = [{"type": e.get("type", ""), "loc": [_safe(p) for p in e.get("loc", ())],
               "msg": _safe(e.get("msg", ""))} for e in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


def create_app(settings: Settings | None = None, *, encoder: Encoder | None = None) -> FastAPI:
    """Build the app for `settings` (default: from the environment). `encoder` replaces the
    configured one, for tests."""
    settings = settings or load_settings()
    logging.getLogger("service").setLevel(settings.log_level)
    try:
        collections = read_catalog(settings)
    except CatalogError as exc:
        raise StartupError(str(exc)) from None
    named = settings.collections_file is not None
    try:
        for collection in collections:
            check_startup(collection.settings(settings), encoder,
                          collection.name if named else None)
    except store.IndexUnavailable as exc:
        raise StartupError(str(exc)) from exc
    library = Library(settings, collections,
                      encoder.model if encoder else describe_model(settings.model_dir), encoder)
    # The routes that predate collections, the metrics' index figures and the insights page
    # use this one: `default`, or the first collection declared.
    engine = library.primary.engine
    recorder = None
    if settings.recording:
        url = records.database_url(settings)
        recorder = Recorder(lambda: records.Store.open(settings),
                            backend=url.partition(":")[0].partition("+")[0],
                            capacity=settings.record_queue,
                            retention_days=settings.retention_days,
                            store_questions=settings.store_questions,
                            store_users=settings.store_users)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for shelf in library:
            shelf.engine.load()
        if recorder is not None:
            recorder.start()
        # One watcher per collection: a slow or refused version of one never delays another.
        watchers = [ReloadWatcher(shelf.engine, settings.reload_interval,
                                  shelf.name if named else "")
                    for shelf in library] if settings.reload_interval > 0 else []
        for watcher in watchers:
            watcher.start()
        try:
            yield
        finally:
            for watcher in watchers:
                watcher.stop()
            if recorder is not None:
                # Off the event loop: the writer may still be committing its last batch.
                await anyio.to_thread.run_sync(recorder.stop)
            worker_exited(settings.metrics_dir)

    app = FastAPI(
        title="Cited Q&A",
        summary="Answers questions about a body of text with verbatim, checkable citations.",
        version="0.1.0",
        lifespan=lifespan,
        # Swagger UI loads its script from a public CDN onto this origin: off unless asked for.
        # The schema itself is plain JSON and always served.
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url=None,
        openapi_url="/openapi.json",
        responses=REFUSALS,
        # A redirect to the slash-less path would build its Location from the Host header.
        redirect_slashes=False,
    )
    app.state.engine = engine
    app.state.library = library
    app.state.settings = settings
    app.state.recorder = recorder
    identity = ClientIdentity(settings.trusted_proxies)
    app.state.client_identity = identity
    try:
        auth = authenticator(settings, identity)
    except AuthConfigError as exc:
        raise StartupError(str(exc)) from None
    if settings.insights_groups and auth is None:
        raise StartupError("QA_INSIGHTS_GROUPS is set but no identities are: set QA_JWT_JWKS_URL "
                           "or QA_JWT_SECRET (with QA_JWT_ISSUER and QA_JWT_AUDIENCE), or "
                           "QA_PROXY_IDENTITY")
    # The admin paths skip the identity middleware (they take the admin token); the insights
    # routes ask the authenticator themselves when QA_INSIGHTS_GROUPS lets groups in.
    app.state.authenticator = auth
    app.include_router(router)
    app.include_router(feedback.router)
    app.include_router(web_router)
    if settings.admin_token is not None:
        app.state.admin = Admin(settings, library, encoder)
        app.include_router(admin_router)
    if settings.admin_token is not None or settings.insights_groups:
        app.include_router(feedback.api)
        app.include_router(feedback.pages)
    app.add_exception_handler(RequestValidationError, validation_error)
    shared = settings.metrics_dir
    capacity = SharedCapacity(settings.max_concurrency) if shared else Capacity(
        settings.max_concurrency)
    app.state.metrics = Metrics(engine, capacity, shared_dir=shared, library=library)
    if recorder is not None:
        app.state.metrics.registry.register(RecorderCollector(recorder))
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    # The last added runs first: observability sees every response, CORS headers reach the
    # refusals, and a refused request costs no body read and no answering slot.
    app.add_middleware(AnswerLimitMiddleware, capacity=capacity,
                       timeout=settings.request_timeout)
    # Uploaded documents may be up to QA_MAX_FILE_BYTES, plus room for the form or JSON framing,
    # but only with admin routes on and the admin token in the headers: anyone else is held to
    # the small limit before a byte is read.
    admin: Admin | None = getattr(app.state, "admin", None)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes,
                       overrides=dict.fromkeys(("/api/admin/documents/",
                                                "/api/admin/collections/"),
                                               settings.max_file_bytes + 65_536)
                       if admin else None,
                       trusted=admin.carries_token if admin else None,
                       timeout=settings.body_timeout)
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    app.state.limiters = [admin.failures] if admin else []
    if auth is not None:
        app.add_middleware(RefusalMiddleware)
    if settings.rate_limit:
        requests = limiter(redis_url, settings.rate_limit, "requests")
        app.state.limiters.append(requests)
        # With several collections a client's allowance is counted per collection.
        app.add_middleware(RateLimitMiddleware, limiter=requests, identity=identity,
                           collection=library.bucket_for if named else None)
    if auth is not None:
        # Identities are decided outside the rate limiter, which then counts per verified
        # user; refusals are sent inside it (bad tokens use up the address's allowance) and
        # inside CORS, so a widget on another origin can read its 401.
        app.add_middleware(AuthMiddleware, authenticator=auth)
    redis_limited = [lim for lim in app.state.limiters if isinstance(lim, SharedLimiter)]
    if redis_limited:
        app.state.metrics.registry.register(LimiterCollector(redis_limited))
    # QA_ALLOWED_ORIGINS on every route, and each collection's allowed_origins on its own.
    app.add_middleware(CollectionCORSMiddleware,
                       origins_for=lambda path: library.origins_for(path,
                                                                    settings.allowed_origins))
    app.add_middleware(ObservabilityMiddleware, metrics=app.state.metrics,
                       routes=app.router.routes, client=identity.address,
                       log_questions=settings.log_questions, max_body=settings.max_body_bytes)
    return app

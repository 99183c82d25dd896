"""Admin HTTP routes, on only when QA_ADMIN_TOKEN is set: new text, build jobs, reloads."""

from __future__ import annotations

import hmac
import logging
import threading
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.types import Scope

from service.catalog import DEFAULT
from service.http.bearer import bearer_token
from service.http.jobs import KEEP_JOBS, BuildBusy, BuildJob, BuildJobs
from service.http.library import Library, Shelf
from service.http.ratelimit import retry_after_header
from service.http.sharedlimits import limiter
from service.index import store
from service.index.encoder import Encoder
from service.index.indexing import parse_limits
from service.qa import sources
from service.qa.engine import Engine
from service.settings import Settings

log = logging.getLogger(__name__)


class BuildRequest(BaseModel):
    force: bool = Field(default=False, description="Publish a new version even if unchanged.")
    strict: bool = Field(default=False, description="Fail on any unusable file.")


class TextBody(BaseModel):
    text: str = Field(description="The file's content (UTF-8).")


class StoredOut(BaseModel):
    doc_id: str
    created: bool
    bytes: int
    documents: int = Field(description="Documents in the file (records, for .jsonl).")


class DeletedOut(BaseModel):
    doc_id: str
    deleted: Literal[True] = True


class ReloadOut(BaseModel):
    index_version: str | None
    reloaded: bool


@dataclass(frozen=True)
class Desk:
    """One collection as its admin routes see it: its folders, engine, corpus write lock and
    build jobs."""

    shelf: Shelf
    jobs: BuildJobs
    write_lock: threading.Lock

    @property
    def settings(self) -> Settings:
        return self.shelf.settings

    @property
    def engine(self) -> Engine:
        return self.shelf.engine


@dataclass
class Admin:
    """What the admin routes share: the token, the failed-login limiter, and each
    collection's desk."""

    settings: Settings
    library: Library
    encoder: Encoder | None = None

    def __post_init__(self) -> None:
        if self.settings.admin_token is None:
            raise ValueError("admin routes need QA_ADMIN_TOKEN")
        self.token = self.settings.admin_token.get_secret_value().encode()
        url = self.settings.redis_url
        self.failures = limiter(url.get_secret_value() if url else None,
                                self.settings.admin_rate_limit, "admin-failures")
        self.desks = {shelf.name: Desk(shelf, BuildJobs(shelf.settings, shelf.engine,
                                                        self.encoder), threading.Lock())
                      for shelf in self.library}

    def desk(self, name: str) -> Desk:
        """The collection's desk; 404 for a name not declared (admins may see every name)."""
        found = self.desks.get(name)
        if found is None:
            raise HTTPException(404, f"no collection {name!r}")
        return found

    def check_token(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode("utf-8", "replace"), self.token)

    def carries_token(self, scope: Scope) -> bool:
        """Whether a request's headers carry the right bearer token (for limits applied before
        routing; the route's own check still runs and counts failures)."""
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                presented = bearer_token(value.decode("latin-1"))
                return presented is not None and self.check_token(presented)
        return False


def get_admin(request: Request) -> Admin:
    admin: Admin = request.app.state.admin
    return admin


AdminDep = Annotated[Admin, Depends(get_admin)]


def get_desk(name: str, admin: AdminDep) -> Desk:
    return admin.desk(name)


def get_default_desk(admin: AdminDep) -> Desk:
    return admin.desk(DEFAULT)


DeskDep = Annotated[Desk, Depends(get_desk)]
DefaultDeskDep = Annotated[Desk, Depends(get_default_desk)]


def lockout(admin: Admin, client: str) -> tuple[str, dict[str, str]] | None:
    """The 429's reason and headers while `client` is held back after failed tries at the
    admin token, else None."""
    wait = admin.failures.retry_after(client)
    if wait <= 0:
        return None
    return (f"too many failed admin authentications; retry in {retry_after_header(wait)} s",
            {"Retry-After": retry_after_header(wait)})


def require_admin(request: Request, admin: AdminDep,
                  authorization: Annotated[str | None, Header()] = None) -> None:
    """Bearer-token check. Failed attempts are limited per client, so the token cannot be
    guessed at speed; the token itself is never logged."""
    client = request.app.state.client_identity.of(request.scope)
    refused = lockout(admin, client)
    if refused is not None:
        raise HTTPException(429, refused[0], headers=refused[1])
    presented = bearer_token(authorization)
    if presented is None or not admin.check_token(presented):
        admin.failures.hit(client)
        log.warning("admin authentication failed from %s", client)
        raise HTTPException(401, "a valid admin bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})


router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(require_admin)],
                   responses={401: {"description": "Missing or wrong bearer token."}})

_UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": TextBody.model_json_schema()},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"}}}},
}}}


async def _upload(request: Request) -> bytes:
    """The file's bytes, from a JSON `{"text": ...}` body or a multipart `file` field."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            body = TextBody.model_validate_json(await request.body())
        except ValidationError as exc:
            raise HTTPException(422, 'the body must be JSON {"text": "..."}') from exc
        try:
            return body.text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise HTTPException(422, "text contains a lone surrogate") from exc
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=10)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, 'the form must carry the document in a "file" field')
        return await upload.read()
    raise HTTPException(415, 'send JSON {"text": "..."} or a multipart form with a "file" field')


async def _put(doc_id: str, request: Request, response: Response, desk: Desk) -> StoredOut:
    data = await _upload(request)

    def store_file() -> sources.Stored:
        with desk.write_lock:
            return sources.put_source(desk.settings.corpus_dir, doc_id, data,
                                      desk.settings.max_file_bytes, parse_limits(desk.settings))

    try:
        stored = await run_in_threadpool(store_file)
    except sources.SourceTooLarge as exc:
        raise HTTPException(413, str(exc)) from exc
    except sources.InvalidSource as exc:
        raise HTTPException(422, str(exc)) from exc
    response.status_code = 201 if stored.created else 200
    return StoredOut(**asdict(stored))


def _delete(doc_id: str, desk: Desk) -> DeletedOut:
    try:
        with desk.write_lock:
            sources.delete_source(desk.settings.corpus_dir, doc_id)
    except sources.InvalidSource as exc:
        raise HTTPException(422, str(exc)) from exc
    except sources.SourceNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    return DeletedOut(doc_id=doc_id)


def _build(response: Response, desk: Desk, body: BuildRequest | None, location: str) -> BuildJob:
    options = body or BuildRequest()
    try:
        job = desk.jobs.start(options.force, options.strict)
    except BuildBusy as exc:
        raise HTTPException(409, str(exc)) from exc
    response.headers["Location"] = f"{location}/{job.id}"
    return job


def _status(job_id: str, desk: Desk) -> BuildJob:
    job = desk.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no build {job_id!r} (only the last {KEEP_JOBS} are kept)")
    return job


def _reload(desk: Desk) -> ReloadOut:
    try:
        reloaded = desk.engine.reload_if_changed(retry=True)
    except store.IndexUnavailable as exc:
        raise HTTPException(409, f"{exc} (still serving {desk.engine.served_version})") from exc
    return ReloadOut(index_version=desk.engine.served_version, reloaded=reloaded)


_BUSY: dict[int | str, dict[str, Any]] = {409: {"description": "A build is already running."}}
_REFUSED: dict[int | str, dict[str, Any]] = {
    409: {"description": "The published version was refused."}}
_COLLECTION = "/collections/{name}"


@router.put("/documents/{doc_id:path}", response_model=StoredOut, openapi_extra=_UPLOAD_BODY,
            responses={201: {"model": StoredOut, "description": "Created."}})
async def put_document(doc_id: str, request: Request, response: Response,
                       desk: DefaultDeskDep) -> StoredOut:
    """Add or replace a corpus file of `default` (validated like a build reads it); then
    start a build."""
    return await _put(doc_id, request, response, desk)


@router.delete("/documents/{doc_id:path}", response_model=DeletedOut)
def delete_document(doc_id: str, desk: DefaultDeskDep) -> DeletedOut:
    """Delete a corpus file of `default`; the next build drops its documents."""
    return _delete(doc_id, desk)


@router.post("/builds", response_model=BuildJob, status_code=202, responses=_BUSY)
def start_build(response: Response, desk: DefaultDeskDep,
                body: BuildRequest | None = None) -> BuildJob:
    """Start an incremental build of `default` in the background; read its status at the
    Location URL."""
    return _build(response, desk, body, f"{router.prefix}/builds")


@router.get("/builds/{job_id}", response_model=BuildJob)
def build_status(job_id: str, desk: DefaultDeskDep) -> BuildJob:
    """A build job: queued, running, succeeded (with its report) or failed (with the reason)."""
    return _status(job_id, desk)


@router.post("/reload", response_model=ReloadOut, responses=_REFUSED)
def reload(desk: DefaultDeskDep) -> ReloadOut:
    """Serve the published version of `default` now (the service also polls for it)."""
    return _reload(desk)


@router.put(_COLLECTION + "/documents/{doc_id:path}", response_model=StoredOut,
            openapi_extra=_UPLOAD_BODY,
            responses={201: {"model": StoredOut, "description": "Created."}})
async def put_collection_document(doc_id: str, request: Request, response: Response,
                                  desk: DeskDep) -> StoredOut:
    """Add or replace a corpus file of this collection; then start a build."""
    return await _put(doc_id, request, response, desk)


@router.delete(_COLLECTION + "/documents/{doc_id:path}", response_model=DeletedOut)
def delete_collection_document(doc_id: str, desk: DeskDep) -> DeletedOut:
    """Delete a corpus file of this collection; its next build drops its documents."""
    return _delete(doc_id, desk)


@router.post(_COLLECTION + "/builds", response_model=BuildJob, status_code=202,
             responses=_BUSY)
def start_collection_build(name: str, response: Response, desk: DeskDep,
                           body: BuildRequest | None = None) -> BuildJob:
    """Start an incremental build of this collection in the background."""
    return _build(response, desk, body, f"{router.prefix}/collections/{name}/builds")


@router.get(_COLLECTION + "/builds/{job_id}", response_model=BuildJob)
def collection_build_status(job_id: str, desk: DeskDep) -> BuildJob:
    """A build job of this collection."""
    return _status(job_id, desk)


@router.post(_COLLECTION + "/reload", response_model=ReloadOut, responses=_REFUSED)
def reload_collection(desk: DeskDep) -> ReloadOut:
    """Serve this collection's published version now."""
    return _reload(desk)

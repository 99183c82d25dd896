"""Admin HTTP routes, on only when QA_ADMIN_TOKEN is set: new text, build jobs, reloads."""

from __future__ import annotations

import hmac
import logging
import threading
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service import sources, store
from service.corpus import CorpusError
from service.encoder import Encoder, EncoderError
from service.engine import Engine
from service.indexing import BuildError, build_index
from service.ratelimit import RateLimiter, retry_after_header
from service.settings import Settings

log = logging.getLogger(__name__)

# Finished jobs kept for status reads; older ones are forgotten.
KEEP_JOBS = 50
JobStatus = Literal["queued", "running", "succeeded", "failed"]


class BuildBusy(Exception):
    """A build is already running (here, or elsewhere holding the index lock)."""


class BuildReportOut(BaseModel):
    version: str | None
    published: bool
    documents: int
    chunks: int
    added: list[str]
    changed: list[str]
    removed: list[str]
    embedded: int
    reused: int
    seconds: float
    skipped: list[str]
    reason: str


class BuildJob(BaseModel):
    id: str
    status: JobStatus
    force: bool
    strict: bool
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    report: BuildReportOut | None = None
    error: str | None = None
    index_version: str | None = Field(
        default=None, description="The version the service serves once the job has finished.")


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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Admin:
    """What the admin routes share: the token, the failed-login limiter, corpus writes and
    build jobs."""

    settings: Settings
    engine: Engine
    encoder: Encoder | None = None

    def __post_init__(self) -> None:
        if self.settings.admin_token is None:
            raise ValueError("admin routes need QA_ADMIN_TOKEN")
        self.token = self.settings.admin_token.get_secret_value().encode()
        self.failures = RateLimiter(self.settings.admin_rate_limit)
        self.write_lock = threading.Lock()
        self._jobs: OrderedDict[str, BuildJob] = OrderedDict()
        self._jobs_lock = threading.Lock()

    def check_token(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode("utf-8", "replace"), self.token)

    def job(self, job_id: str) -> BuildJob | None:
        with self._jobs_lock:
            job = self._jobs.get(job_id)
            return job.model_copy(deep=True) if job else None

    def start_build(self, force: bool, strict: bool) -> BuildJob:
        """Queue a build in a background thread; BuildBusy if one is running."""
        with self._jobs_lock:
            for other in self._jobs.values():
                if other.status in ("queued", "running"):
                    raise BuildBusy(f"build {other.id} is already {other.status}")
            holder = store.lock_holder(self.settings.index_dir)
            if holder is not None:
                raise BuildBusy(f"another build is running on {self.settings.index_dir} "
                                f"({holder})")
            job = BuildJob(id=uuid.uuid4().hex[:12], status="queued", force=force, strict=strict,
                           created_at=_now())
            self._jobs[job.id] = job
            while len(self._jobs) > KEEP_JOBS:
                self._jobs.popitem(last=False)
            snapshot = job.model_copy(deep=True)
        threading.Thread(target=self._run, args=(job.id,), name=f"build-{job.id}",
                         daemon=True).start()
        return snapshot

    def _update(self, job_id: str, **changes: object) -> None:
        with self._jobs_lock:
            job = self._jobs.get(job_id)
            if job is not None:
                self._jobs[job_id] = job.model_copy(update=changes)

    def _run(self, job_id: str) -> None:
        job = self.job(job_id)
        assert job is not None
        self._update(job_id, status="running", started_at=_now())
        report: BuildReportOut | None = None
        try:
            built = build_index(self.settings, force=job.force, strict=job.strict,
                                encoder=self.encoder)
            report = BuildReportOut(**asdict(built))
            # Serve it now rather than at the watcher's next poll.
            self.engine.reload_if_changed(retry=True)
        except (CorpusError, BuildError, EncoderError, store.BuildLocked,
                store.IndexUnavailable, OSError) as exc:
            log.warning("build %s failed: %s", job_id, exc)
            error = str(exc) if report is None else (
                f"published {report.version}, but the service refused it: {exc}")
            self._update(job_id, status="failed", error=error, report=report,
                         finished_at=_now(), index_version=self.engine.served_version)
        except Exception as exc:
            log.exception("build %s failed", job_id)
            self._update(job_id, status="failed", error=f"unexpected error: {exc}",
                         report=report, finished_at=_now(),
                         index_version=self.engine.served_version)
        else:
            self._update(job_id, status="succeeded", finished_at=_now(), report=report,
                         index_version=self.engine.served_version)


def get_admin(request: Request) -> Admin:
    admin: Admin = request.app.state.admin
    return admin


AdminDep = Annotated[Admin, Depends(get_admin)]


def require_admin(request: Request, admin: AdminDep,
                  authorization: Annotated[str | None, Header()] = None) -> None:
    """Bearer-token check. Failed attempts are limited per client, so the token cannot be
    guessed at speed; the token itself is never logged."""
    client = request.app.state.client_identity.of(request.scope)
    wait = admin.failures.retry_after(client)
    if wait > 0:
        raise HTTPException(429, "too many failed admin authentications; retry in "
                                 f"{retry_after_header(wait)} s",
                            headers={"Retry-After": retry_after_header(wait)})
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not admin.check_token(presented.strip()):
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


@router.put("/documents/{doc_id:path}", response_model=StoredOut, openapi_extra=_UPLOAD_BODY,
            responses={201: {"model": StoredOut, "description": "Created."}})
async def put_document(doc_id: str, request: Request, response: Response,
                       admin: AdminDep) -> StoredOut:
    """Add or replace a corpus file (validated like a build reads it); then start a build."""
    data = await _upload(request)

    def store_file() -> sources.Stored:
        with admin.write_lock:
            return sources.put_source(admin.settings.corpus_dir, doc_id, data,
                                      admin.settings.max_file_bytes)

    try:
        stored = await run_in_threadpool(store_file)
    except sources.SourceTooLarge as exc:
        raise HTTPException(413, str(exc)) from exc
    except sources.InvalidSource as exc:
        raise HTTPException(422, str(exc)) from exc
    response.status_code = 201 if stored.created else 200
    return StoredOut(**asdict(stored))


@router.delete("/documents/{doc_id:path}", response_model=DeletedOut)
def delete_document(doc_id: str, admin: AdminDep) -> DeletedOut:
    """Delete a corpus file; the next build drops its documents."""
    try:
        with admin.write_lock:
            sources.delete_source(admin.settings.corpus_dir, doc_id)
    except sources.InvalidSource as exc:
        raise HTTPException(422, str(exc)) from exc
    except sources.SourceNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    return DeletedOut(doc_id=doc_id)


@router.post("/builds", response_model=BuildJob, status_code=202,
             responses={409: {"description": "A build is already running."}})
def start_build(response: Response, admin: AdminDep, body: BuildRequest | None = None) -> BuildJob:
    """Start an incremental build in the background; read its status at the Location URL."""
    options = body or BuildRequest()
    try:
        job = admin.start_build(options.force, options.strict)
    except BuildBusy as exc:
        raise HTTPException(409, str(exc)) from exc
    response.headers["Location"] = f"{router.prefix}/builds/{job.id}"
    return job


@router.get("/builds/{job_id}", response_model=BuildJob)
def build_status(job_id: str, admin: AdminDep) -> BuildJob:
    """A build job: queued, running, succeeded (with its report) or failed (with the reason)."""
    job = admin.job(job_id)
    if job is None:
        raise HTTPException(404, f"no build {job_id!r} (only the last {KEEP_JOBS} are kept)")
    return job


@router.post("/reload", response_model=ReloadOut,
             responses={409: {"description": "The published version was refused."}})
def reload(admin: AdminDep) -> ReloadOut:
    """Serve the published version now (the service also polls for it on its own)."""
    try:
        reloaded = admin.engine.reload_if_changed(retry=True)
    except store.IndexUnavailable as exc:
        raise HTTPException(409, f"{exc} (still serving {admin.engine.served_version})") from exc
    return ReloadOut(index_version=admin.engine.served_version, reloaded=reloaded)

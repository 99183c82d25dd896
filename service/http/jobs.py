"""Build jobs: one background build at a time, its status readable while and after it runs."""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from service.index import store
from service.index.encoder import Encoder, EncoderError
from service.index.indexing import BuildError, build_index
from service.index.progress import Progress
from service.ingest.corpus import CorpusError
from service.qa.engine import Engine
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
    progress: str | None = Field(
        default=None, description="While running: the stage, how far it is, its rate and "
                                  "the time left, e.g. 'embedding chunks: 120/900 (40/s, "
                                  "about 20s left)'.")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class BuildJobs:
    """Runs builds in background threads for a serving engine, one at a time, and serves the
    result as soon as it is published."""

    def __init__(self, settings: Settings, engine: Engine, encoder: Encoder | None = None):
        self.settings = settings
        self.engine = engine
        self.encoder = encoder
        self._jobs: OrderedDict[str, BuildJob] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job_id: str) -> BuildJob | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return job.model_copy(deep=True) if job else None

    def start(self, force: bool = False, strict: bool = False) -> BuildJob:
        """Queue a build in a background thread; BuildBusy if one is running."""
        with self._lock:
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
        threading.Thread(target=self._run, args=(job,), name=f"build-{job.id}",
                         daemon=True).start()
        return job.model_copy(deep=True)

    def _update(self, job_id: str, **changes: object) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                self._jobs[job_id] = job.model_copy(update=changes)

    def _run(self, job: BuildJob) -> None:
        self._update(job.id, status="running", started_at=_now())
        report: BuildReportOut | None = None
        tracker = Progress(lambda line: self._update(job.id, progress=line), every=1.0)
        try:
            built = build_index(self.settings, force=job.force, strict=job.strict,
                                encoder=self.encoder, tracker=tracker)
            report = BuildReportOut(**asdict(built))
            # Serve it now rather than at the watcher's next poll.
            self.engine.reload_if_changed(retry=True)
        except (CorpusError, BuildError, EncoderError, store.BuildLocked,
                store.IndexUnavailable, OSError) as exc:
            log.warning("build %s failed: %s", job.id, exc)
            error = str(exc) if report is None else (
                f"published {report.version}, but the service refused it: {exc}")
            self._update(job.id, status="failed", error=error, report=report,
                         finished_at=_now(), index_version=self.engine.served_version)
        except Exception as exc:
            log.exception("build %s failed", job.id)
            self._update(job.id, status="failed", error=f"unexpected error: {exc}",
                         report=report, finished_at=_now(),
                         index_version=self.engine.served_version)
        else:
            self._update(job.id, status="succeeded", finished_at=_now(), report=report,
                         index_version=self.engine.served_version)

"""Recording answers off the request path: a bounded queue drained by one writer thread."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.catalog import DEFAULT
from service.qa.answer import Answer
from service.usage.records import AnswerRecord, Store, describe

log = logging.getLogger(__name__)

COLLECTION = DEFAULT  # the collection of the routes that predate collections
BATCH = 500
# After the first record of a batch the writer waits this long for more: a commit per request
# would hold the GIL often enough to slow answers (measured: +0.3 ms at p50 on cached answers).
LINGER = 0.2
RETRY_OPEN = 5.0  # seconds between attempts to open a store that is down
RETENTION_EVERY = 3600.0  # seconds between retention sweeps
USER_CHARS = 200  # the store's column size: a longer name must not fail the whole batch


@dataclass(slots=True)
class Pending:
    """What a route hands over: the answer object itself, so nothing is copied on the loop."""

    id: str
    at: float
    route: str
    index_version: str
    answer: Answer
    latency_ms: float
    question: str | None
    user: str | None = None
    collection: str = DEFAULT


def to_record(p: Pending) -> AnswerRecord:
    """What the store keeps of a pending answer (made on the writer thread)."""
    cited = tuple(dict.fromkeys(c.doc_id for c in p.answer.citations))
    quoted = tuple((c.doc_id, c.start, c.end) for c in p.answer.citations if c.highlights)
    vector = p.answer.query_vector
    # Only a declined question's: the insights group unanswered questions by it. Half
    # precision: grouping compares vectors at a threshold far coarser than float16.
    stored = (np.asarray(vector, dtype=np.float16).tobytes()
              if p.question is not None and vector is not None and not p.answer.answered
              else None)
    return AnswerRecord(p.id, p.at, p.collection, p.index_version, p.route, p.answer.answered,
                        p.answer.confidence, p.latency_ms, cited, quoted, p.question, stored,
                        p.user[:USER_CHARS] if p.user is not None else None)


class Recorder:
    """Takes answer records without ever blocking, writes them in batches from one thread,
    and keeps the counts that /readyz and /metrics show. A store that is down or full costs
    dropped records, never a failed answer."""

    def __init__(self, open_store: Callable[[], Store], *, backend: str, capacity: int,
                 retention_days: int, store_questions: bool, store_users: bool = False) -> None:
        self._open_store = open_store
        self.backend = backend
        self.retention = retention_days * 86_400.0
        self.store_questions = store_questions
        self.store_users = store_users
        self._queue: queue.Queue[Pending | None] = queue.Queue(maxsize=capacity)
        self.store: Store | None = None
        self.error: str | None = None
        self.written = 0
        self.dropped_full = 0
        self.dropped_error = 0
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._busy = 0  # records taken from the queue and not yet committed or dropped
        self._stopping = threading.Event()

    # ---------------------------------------------------------------- request side

    def record(self, route: str, index_version: str, answer: Answer, question: str,
               latency_ms: float, user: str | None = None,
               collection: str = DEFAULT) -> str:
        """Queue one answer; returns its id. Never blocks: a full queue drops the record.
        The question and the user are kept only when the settings allow it."""
        pending = Pending(os.urandom(16).hex(), time.time(), route, index_version, answer,
                          latency_ms, question if self.store_questions else None,
                          user if self.store_users else None, collection)
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            self.dropped_full += 1
        return pending.id

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def status(self) -> Literal["ok", "starting", "down", "failing"]:
        if self.store is None:
            return "starting" if self.error is None else "down"
        return "ok" if self.error is None else "failing"

    def cutoff(self) -> float:
        """Answers recorded before this time are past retention."""
        return time.time() - self.retention

    def flush(self, timeout: float) -> bool:
        """Wait until what is queued now is committed (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._queue.unfinished_tasks or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.05))
        return True

    # ---------------------------------------------------------------- writer side

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="answer-recorder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (within `timeout`), then stop the writer."""
        if self._thread is None:
            return
        self._stopping.set()
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._thread = None
        if self.store is not None:
            self.store.close()

    def _run(self) -> None:
        next_sweep = 0.0
        while self.store is None:
            try:
                self.store = self._open_store()
                self.error = None
            except Exception as exc:  # noqa: BLE001 - any failure means: not open yet
                self.error = describe(exc)
                log.error("answer store unavailable (retrying in %.0f s): %s", RETRY_OPEN,
                          self.error)
                if self._drain_until(time.monotonic() + RETRY_OPEN):
                    return
        while True:
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + RETENTION_EVERY
                self._sweep()
            batch, stop = self._take(timeout=1.0)
            if batch:
                self._write(batch)
            if stop:
                return

    def _take(self, timeout: float) -> tuple[list[Pending], bool]:
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return [], False
        batch: list[Pending] = []
        taken, stop = 1, first is None
        if first is not None:
            batch.append(first)
            # Sleep rather than wait on the queue, so that a put wakes nobody; stopping ends
            # the sleep at once.
            self._stopping.wait(LINGER)
        while len(batch) < BATCH and not stop:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            taken += 1
            if item is None:
                stop = True
            else:
                batch.append(item)
        with self._idle:
            self._busy += len(batch)
            for _ in range(taken):
                self._queue.task_done()
        return batch, stop

    def _write(self, batch: list[Pending]) -> None:
        assert self.store is not None
        try:
            self.store.write_answers([to_record(p) for p in batch])
            self.written += len(batch)
            if self.error is not None:
                log.warning("answer store writable again")
            self.error = None
        except Exception as exc:  # noqa: BLE001 - a failing store must not stop the writer
            self.dropped_error += len(batch)
            if self.error is None:
                log.error("answer store write failed, %d records dropped: %s", len(batch),
                          describe(exc))
            self.error = describe(exc)
        finally:
            with self._idle:
                self._busy -= len(batch)
                self._idle.notify_all()

    def _drain_until(self, deadline: float) -> bool:
        """While the store cannot be opened, records wait in the queue (it drops when full);
        returns True when asked to stop."""
        return self._stopping.wait(max(0.0, deadline - time.monotonic()))

    def _sweep(self) -> None:
        assert self.store is not None
        try:
            deleted = self.store.delete_before(self.cutoff())
            if deleted:
                log.info("deleted %d answers past the %.0f-day retention", deleted,
                         self.retention / 86_400)
        except Exception as exc:  # noqa: BLE001
            self.error = describe(exc)
            log.error("retention sweep failed: %s", self.error)


class RecorderCollector(Collector):
    """The recorder's counts for /metrics, read at scrape time."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def collect(self) -> Iterator[Metric]:
        r = self.recorder
        yield GaugeMetricFamily("qa_store_up", "1 while the answer store is open and writable.",
                                value=1 if r.status() == "ok" else 0)
        yield GaugeMetricFamily("qa_records_queued", "Answer records waiting for the writer.",
                                value=r.queued)
        yield CounterMetricFamily("qa_records_written", "Answer records committed to the store.",
                                  value=r.written)
        dropped = CounterMetricFamily("qa_records_dropped", "Answer records lost, by reason.",
                                      labels=["reason"])
        dropped.add_metric(["queue_full"], r.dropped_full)
        dropped.add_metric(["store_error"], r.dropped_error)
        yield dropped

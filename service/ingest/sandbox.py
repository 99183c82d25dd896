"""Running readers in worker processes with a time and a memory limit: a file that hangs,
crashes or balloons its parser costs one named problem and one worker, never the build."""

from __future__ import annotations

import logging
import multiprocessing
import queue
import resource
import signal
import threading
from dataclasses import dataclass
from functools import cache
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from types import TracebackType
from typing import Any

from service.ingest.document import Extraction, Problem, Reader, ReadError

log = logging.getLogger(__name__)

# A worker is replaced after this many files, so memory a parser leaks or fragments cannot
# add up towards the limit over a large build.
FILES_PER_WORKER = 200


@dataclass(frozen=True)
class ParseLimits:
    """Per-file limits for isolated readers (QA_PARSE_TIMEOUT, QA_PARSE_MEMORY_MB)."""

    timeout: float = 60.0
    memory_mb: int = 1024


@cache
def _context() -> BaseContext:
    # A fork server forks workers from a small clean process that has already imported the
    # readers: safe from a threaded parent (a web server, a build pool), which plain fork is
    # not. Starting a worker still costs a re-import of the parent's main module (that is how
    # multiprocessing prepares a child), so workers are kept for many files.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["service.ingest.registry"])
    return context


def _vm_bytes() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _serve(conn: Connection, memory_bytes: int) -> None:
    """A worker's loop: read (reader, label, data, name) tasks until told to stop."""
    # The address-space limit counts what the worker has mapped already (the interpreter, the
    # parser libraries): the budget is on top of that.
    limit = _vm_bytes() + memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        reader, label, data, name = task
        result: tuple[str, object]
        fatal = False
        try:
            result = ("ok", reader(data, name))
        except ReadError as exc:
            result = ("problem", str(exc))
        except MemoryError:
            result = ("problem", f"the {label} reader ran out of memory (limit "
                                 f"{memory_bytes // 2**20} MB; QA_PARSE_MEMORY_MB)")
            fatal = True
        except RecursionError:
            result = ("problem", f"the {label} reader gave up: the file nests too deeply")
        except Exception as exc:
            result = ("problem", f"the {label} reader failed ({type(exc).__name__}: {exc})")
        del data, task
        conn.send(result)
        if fatal:
            return


class _Worker:
    def __init__(self, context: BaseContext, memory_bytes: int) -> None:
        self.conn, child = context.Pipe()
        self.process: Any = context.Process(  # type: ignore[attr-defined]
            target=_serve, args=(child, memory_bytes), daemon=True, name="reader")
        self.process.start()
        child.close()
        self.files = 0

    def stop(self, kill: bool = False) -> None:
        if not kill:
            try:
                self.conn.send(None)
            except OSError:
                kill = True
        if kill:
            self.process.kill()
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class ReaderPool:
    """Up to `size` worker processes, started when first needed. `read` may be called from
    several threads at once; each call has a worker to itself."""

    def __init__(self, limits: ParseLimits, size: int = 1) -> None:
        self.limits = limits
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(max(1, size))
        self._lock = threading.Lock()
        self._closed = False

    def read(self, reader: Reader, label: str, data: bytes, name: str) -> Extraction:
        """`reader(data, name)` in a worker (the reader is a module-level function, sent by
        name); a problem naming the `label` reader when it fails."""
        with self._slots:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                worker = _Worker(_context(), self.limits.memory_mb * 2**20)
            status, payload = "crashed", None
            try:
                worker.conn.send((reader, label, data, name))
                if worker.conn.poll(self.limits.timeout):
                    status, payload = worker.conn.recv()
                else:
                    status = "timeout"
            except (EOFError, OSError):
                pass
            worker.files += 1
            alive = status in ("ok", "problem") and worker.process.is_alive()
            if alive and worker.files < FILES_PER_WORKER and not self._closed:
                self._idle.put(worker)
            else:
                worker.stop(kill=not alive)
        if status == "ok":
            docs, problems = payload  # type: ignore[misc]
            return docs, problems
        if status == "problem":
            reason = str(payload)
        elif status == "timeout":
            reason = (f"the {label} reader took longer than {self.limits.timeout:g} s and was "
                      "stopped (QA_PARSE_TIMEOUT)")
        else:
            reason = f"the {label} reader crashed ({_exit_reason(worker.process.exitcode)})"
        return [], [Problem(name, reason)]

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().stop()
            except queue.Empty:
                return

    def __enter__(self) -> ReaderPool:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def read_isolated(reader: Reader, label: str, data: bytes, name: str,
                  limits: ParseLimits) -> Extraction:
    """One file in a worker of its own (an upload; a build shares a pool between files)."""
    with ReaderPool(limits) as pool:
        return pool.read(reader, label, data, name)


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"

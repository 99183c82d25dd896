"""Serve with uvicorn in QA_WORKERS processes: the app factory, the worker count and a shared
metrics folder come from here; every other argument goes to uvicorn unchanged.

With several workers, uvicorn's own supervisor runs them, but forked from a parent that has
already imported what every worker imports (numpy, FAISS, onnxruntime, FastAPI, the service's
modules) instead of spawned fresh: the workers share those pages with the parent and with each
other until they write to them. Each worker still builds its own app after the fork (the ONNX
session and its threads, the index, the reload watcher): nothing with a thread or a lock is
made before it."""

from __future__ import annotations

import gc
import importlib
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import uvicorn  # noqa: E402
import uvicorn._subprocess  # noqa: E402
from uvicorn.main import main as uvicorn_cli  # noqa: E402
from uvicorn.supervisors.multiprocess import SIGNALS  # noqa: E402

from service.settings import InvalidSettings, Settings, from_environment  # noqa: E402

APP = "service.app:create_app"
_SUBPROCESS_STARTED = uvicorn._subprocess.subprocess_started
# Modules a worker imports while it starts and answers its first questions, beyond what the
# app factory's module imports itself: the encoder's runtime and tokenizer, the HTTP protocol
# and event loop uvicorn picks, the answer store's SQLite, the prepared-encoder cache the
# encoder opens, and numpy.ma (numpy imports it lazily the first time retrieval calls np.unique).
PRELOAD = ("service.app", "onnxruntime", "tokenizers", "sqlite3", "uvloop", "httptools",
           "uvicorn.protocols.http.h11_impl", "uvicorn.protocols.http.httptools_impl",
           "uvicorn.protocols.websockets.auto", "uvicorn.lifespan.on", "uvicorn.loops.uvloop",
           "service.index.prepared", "numpy.ma")


def clear(folder: Path) -> None:
    """Empty a metrics folder: files left by an earlier run would be summed into this one."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.glob("*.db"):
        path.unlink(missing_ok=True)


def _in_worker() -> None:
    # A forked worker inherits the supervisor's handlers (which queue the signal for the
    # supervisor's loop, one the worker never runs); uvicorn's server sets its own for
    # SIGINT and SIGTERM, and every other signal behaves as in a fresh process.
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    gc.enable()


def prefork(settings: Settings) -> None:
    """Import the workers' modules here, load the tokenizers they will read, and have uvicorn
    fork its workers from this process. The objects made by those imports are frozen out of
    the garbage collector, whose bookkeeping would otherwise write to (and so copy) every page
    holding them in each worker."""
    # No collection in this process from here on: one would leave freed holes in the pages
    # the workers share, and the workers' new objects would land in them (copying the pages).
    gc.disable()
    for name in PRELOAD:
        importlib.import_module(name)
    # Loading a tokenizer parses a file into Rust structures and starts no thread.
    from service.app import preload_for_workers

    preload_for_workers(settings)
    gc.freeze()
    os.register_at_fork(after_in_child=_in_worker)
    # uvicorn makes its worker processes with this multiprocessing context (spawn by default).
    uvicorn._subprocess.spawn = multiprocessing.get_context("fork")  # type: ignore[assignment]
    # ... and starts each with this function (looked up when the worker is made).
    uvicorn._subprocess.subprocess_started = _started_on_own_socket


def own_socket(inherited: socket.socket) -> socket.socket:
    """A listening socket of this worker's own on the address of `inherited` (the one uvicorn's
    supervisor bound for every worker), through SO_REUSEPORT.

    With one shared socket, whichever worker woke first accepted every connection queued, so
    connections opened together (a load balancer's pool, a load generator's) could all land on
    one worker and leave the others idle for as long as they lived: 16 of 16 in two of six c=16
    rounds here, and in most bursts of 16 on idle workers. With a socket each, the kernel hands
    each new connection to one of them by a hash of its addresses, whatever each worker is
    doing. The supervisor's socket stays bound and never listens, so no connection waits on
    it; it holds the port while workers come and go."""
    inherited.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock = socket.socket(inherited.family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(inherited.getsockname())
    return sock


def _started_on_own_socket(config: uvicorn.Config, target: Callable[..., None],
                           sockets: list[socket.socket], stdin_fileno: int | None) -> None:
    """uvicorn's worker entry point (`uvicorn._subprocess.subprocess_started`), serving on
    sockets of the worker's own (`own_socket`) instead of the ones it inherited; a Unix socket
    is served as it is."""
    own = [own_socket(s) if s.family in (socket.AF_INET, socket.AF_INET6) else s
           for s in sockets]
    for inherited, mine in zip(sockets, own, strict=True):
        if mine is not inherited:
            inherited.close()  # this process's descriptor only; the supervisor keeps its own
    _SUBPROCESS_STARTED(config=config, target=target, sockets=own, stdin_fileno=stdin_fileno)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = from_environment()
    except InvalidSettings as exc:
        print(exc, file=sys.stderr)
        return 1
    made = None
    if settings.metrics_dir is not None:
        clear(settings.metrics_dir)
    elif settings.workers > 1:
        # Each worker writes its counters to files here and /metrics sums them. The variable
        # must be set before the workers import prometheus_client: they inherit it.
        made = tempfile.mkdtemp(prefix="qa-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
    if settings.workers > 1:
        prefork(settings)
    try:
        uvicorn_cli.main(args=["--factory", APP, "--workers", str(settings.workers), *args],
                         prog_name="uvicorn", standalone_mode=False)
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

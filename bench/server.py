"""The service on loopback, started the way `make serve` starts it (scripts/serve.py, uvicorn
with QA_WORKERS processes), timed to /readyz."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from bench.http_load import Connection, get

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def serve_arguments(host: str, port: int) -> list[str]:
    """scripts/serve.py's arguments from the Makefile's `serve` recipe, so the bench measures
    exactly what `make serve` runs (flags added there are picked up here)."""
    recipe = (ROOT / "Makefile").read_text("utf-8")
    match = re.search(r"^\t.*?scripts/serve\.py\s+(.*)$", recipe, re.MULTILINE)
    if match is None:
        raise RuntimeError("no scripts/serve.py line in the Makefile's serve recipe")
    line = match.group(1).replace("$(HOST)", host).replace("$(PORT)", str(port))
    # Simple `NAME := value` variables of the Makefile (UVICORN_LIMITS) are expanded too.
    for name, value in re.findall(r"^([A-Z_]+) *:= *(.*)$", recipe, re.MULTILINE):
        line = line.replace(f"$({name})", value)
    return shlex.split(line)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def distinct_frames(pids: list[int]) -> int:
    """How many physical pages the processes `pids` map between them, each counted once; 0
    when pagemap hides the frame numbers (not root) or cannot be read."""
    page = os.sysconf("SC_PAGE_SIZE")
    frames: set[int] = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
            fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
        except OSError:
            continue
        try:
            for line in maps:
                fields = line.split()
                if fields[1].startswith("---") or fields[-1] == "[vsyscall]":
                    continue  # guard regions map nothing
                start, end = (int(x, 16) // page for x in fields[0].split("-"))
                # 8 bytes a page, read a million pages (4 GiB of the mapping) at a time.
                for first in range(start, end, 1 << 20):
                    entries = os.pread(fd, (min(end, first + (1 << 20)) - first) * 8, first * 8)
                    for (entry,) in struct.iter_unpack("<Q", entries):
                        if entry >> 63:  # present; bits 0-54 are the frame number
                            frames.add(entry & ((1 << 55) - 1))
        except OSError:
            continue
        finally:
            os.close(fd)
    frames.discard(0)
    return len(frames)


class Server:
    """`make serve`'s command (or `uvicorn <args>` when `args` are given) with `env` added to
    the bench's environment; stopped by its own PID."""

    def __init__(self, env: dict[str, str], args: list[str] | None = None,
                 log: Path | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.args = (serve_arguments("127.0.0.1", self.port) if args is None
                     else [*args, "--host", "127.0.0.1", "--port", str(self.port)])
        self.args += extra_args
        self.program = ([str(BIN / "python"), "scripts/serve.py"] if args is None
                        else [str(BIN / "uvicorn")])
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env}
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.cold_start_s = float("nan")

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait for /readyz 200; seconds from process start to that answer."""
        out = self.log.open("ab") if self.log else subprocess.DEVNULL
        started = time.perf_counter()
        self.process = subprocess.Popen([*self.program, *self.args], cwd=ROOT,
                                        env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; see {self.log}")
            if self._ready():
                self.cold_start_s = time.perf_counter() - started
                return self.cold_start_s
            time.sleep(0.005)
        self.stop()
        raise TimeoutError(f"server not ready in {timeout:.0f} s; see {self.log}")

    def _ready(self) -> bool:
        try:
            conn = Connection(self.port, timeout=2.0)
        except OSError:
            return False
        try:
            status, _ = conn.call(get("/readyz"))
            return status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def rss_mb(self) -> float:
        """Resident memory of the server process now."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        raise RuntimeError("no VmRSS in /proc status")

    def processes(self) -> list[int]:
        """The server's process and its workers."""
        assert self.process is not None
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            todo += [int(c) for c in children]
        return found

    def memory_mb(self) -> dict[str, float]:
        """RSS and PSS summed over the server's processes. PSS splits pages that processes
        share (libraries, the memory-mapped index) between them, so it adds up honestly; but
        it also splits the library pages that other programs on the machine map (another
        Python of the same virtualenv), so it moves with whatever else runs. `distinct_mb`
        does not: the physical pages the server's processes map, each counted once (read from
        /proc/PID/pagemap, which shows them to root only; left out otherwise)."""
        totals = {"rss_mb": 0.0, "pss_mb": 0.0}
        pids = self.processes()
        for pid in pids:
            try:
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
            except OSError:
                continue
            for line in rollup:
                name, _, rest = line.partition(":")
                if name in ("Rss", "Pss"):
                    totals[f"{name.lower()}_mb"] += int(rest.split()[0]) / 1024
        frames = distinct_frames(pids)
        if frames:
            totals["distinct_mb"] = frames * os.sysconf("SC_PAGE_SIZE") / 2**20
        return {k: round(v, 1) for k, v in totals.items()}

    def cpu_seconds(self) -> float:
        """User and system CPU time the server's processes have used so far."""
        ticks = 0
        for pid in self.processes():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            # Fields after the command name (which may hold spaces): utime, stime are 14, 15.
            fields = stat.rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

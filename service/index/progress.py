"""Progress of a long build: how far each stage is, at what rate, and when it should end."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """Counts work done in stages ("reading files", "embedding chunks") and hands `emit` a line
    such as "embedding chunks: 1,200/3,468 (41/s, about 55s left)" at most every `every`
    seconds, and once when a stage ends. Safe to advance from several threads."""

    def __init__(self, emit: Callable[[str], None], every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.emit = emit
        self.every = every
        self.clock = clock
        self.line = ""
        self._lock = threading.Lock()
        self._stage = ""
        self._total = 0
        self._done = 0
        self._started = 0.0
        self._shown = 0.0

    def stage(self, name: str, total: int) -> None:
        with self._lock:
            self._stage, self._total, self._done = name, total, 0
            self._started = self._shown = self.clock()

    def advance(self, count: int = 1) -> None:
        with self._lock:
            self._done += count
            now = self.clock()
            if self._done < self._total and now - self._shown < self.every:
                return
            self._shown = now
            line = self._format(now)
        self.emit(line)

    def _format(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / elapsed
        shown = f"{rate:.1f}" if rate < 10 else f"{rate:,.0f}"
        line = f"{self._stage}: {self._done:,}/{self._total:,} ({shown}/s"
        if self._done >= self._total:
            line += f", {_duration(elapsed)})"
        else:
            line += f", about {_duration((self._total - self._done) / max(rate, 1e-9))} left)"
        self.line = line
        return line

"""Build progress lines: counts, rate and time left, throttled, a final line per stage."""

from __future__ import annotations

from service.index.progress import Progress


def test_lines_carry_rate_and_time_left_and_are_throttled() -> None:
    now = [0.0]
    lines: list[str] = []
    progress = Progress(lines.append, every=10.0, clock=lambda: now[0])
    progress.stage("embedding chunks", 1000)
    now[0] = 5.0
    progress.advance(100)  # too soon after the start: nothing shown
    now[0] = 10.0
    progress.advance(100)
    now[0] = 15.0
    progress.advance(100)
    now[0] = 50.0
    progress.advance(700)  # the last one always shows
    assert lines == ["embedding chunks: 200/1,000 (20/s, about 40s left)",
                     "embedding chunks: 1,000/1,000 (20/s, 50s)"]
    assert progress.line == lines[-1]


def test_long_waits_read_in_minutes_and_hours() -> None:
    now = [0.0]
    lines: list[str] = []
    progress = Progress(lines.append, every=0.0, clock=lambda: now[0])
    progress.stage("reading files", 100_000)
    now[0] = 60.0
    progress.advance(1000)
    now[0] = 61.0
    progress.advance(1)
    assert lines[0] == "reading files: 1,000/100,000 (17/s, about 1h39m left)"
    progress.stage("reading files", 10)
    now[0] = 71.0
    progress.advance(5)
    assert lines[-1] == "reading files: 5/10 (0.5/s, about 10s left)"

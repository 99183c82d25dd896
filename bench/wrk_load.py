"""c=N load from wrk (Debian's `wrk` package, written in C): on a 2-core machine the load
generator shares the cores with the server it measures, and wrk's one event-loop thread costs
them a fraction of what the Python generator (bench/http_load.py) does. Bounded in time; the
requests cycle through the given JSON bodies, one a line in a file the Lua script reads.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"

# wrk runs this in each of its threads: `request` builds every request, `done` prints the
# totals once, as JSON on a line of its own.
SCRIPT = """
local bodies = {}
for line in io.lines(%(bodies)s) do bodies[#bodies + 1] = line end
local headers = {["Content-Type"] = "application/json"}
local next_body = 0
request = function()
  next_body = next_body %% #bodies + 1
  return wrk.format("POST", %(path)s, headers, bodies[next_body])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"connect": %%d, "read": %%d, "write": %%d, "timeout": %%d, "status": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.timeout, e.status))
end
"""


def available() -> str | None:
    """wrk's version line, or None when it is not installed."""
    if shutil.which("wrk") is None:
        return None
    # `wrk --version` prints its banner and usage, and exits 1.
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0].strip() if out else "wrk"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(port: int, script: Path, concurrency: int, seconds: float) -> dict[str, Any]:
    before = _children_cpu()
    done = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
         "-s", str(script), f"http://{HOST}:{port}/"],
        capture_output=True, text=True, timeout=seconds + 30, check=True)
    cpu = _children_cpu() - before
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {done.stdout[-500:]} {done.stderr[-500:]}")
    raw = json.loads(line.removeprefix("WRK_RESULT "))
    elapsed = raw["duration_us"] / 1e6
    failed = sum(raw[k] for k in ("connect", "read", "write", "timeout", "status"))
    return {"concurrency": concurrency, "seconds": round(elapsed, 2),
            "rps": round(raw["requests"] / elapsed, 1),
            "p50_ms": round(raw["p50_us"] / 1000, 3), "p99_ms": round(raw["p99_us"] / 1000, 3),
            "n": raw["requests"], "failed": failed,
            "generator_cores": round(cpu / elapsed, 3)}


def concurrent(port: int, bodies: Sequence[bytes], concurrency: int, seconds: float = 8.0,
               path: str = "/api/ask", warmup_seconds: float = 1.0) -> dict[str, Any]:
    """`concurrency` keep-alive connections sending `bodies` (JSON) back to back to `path`
    for `seconds` (whole seconds: wrk's unit), after a warm-up. `generator_cores`: wrk's CPU
    time over the wall time."""
    if any(b"\n" in body for body in bodies):
        raise ValueError("one JSON body a line: bodies must not hold a raw newline")
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        lines = Path(tmp) / "bodies.jsonl"
        lines.write_bytes(b"\n".join(bodies) + b"\n")
        script = Path(tmp) / "post.lua"
        # JSON string literals are Lua string literals too (ASCII paths).
        values = {"bodies": json.dumps(str(lines)), "path": json.dumps(path)}
        script.write_text(SCRIPT % values, "utf-8")
        _run(port, script, concurrency, warmup_seconds)
        return _run(port, script, concurrency, seconds)

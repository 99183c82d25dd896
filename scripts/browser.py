"""Find or fetch the Chromium the widget's browser tests drive: `make test` runs this first."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

# Debian's package (CI installs it in .ci/run); Playwright's own download is the fallback.
SYSTEM_CHROMIUM = Path("/usr/bin/chromium")
# Playwright's browsers go inside the venv, so `make clean` removes them with everything else.
CACHE = Path(sys.prefix) / "ms-playwright"
# Playwright's folder layout: chromium-<revision>/chrome-linux/chrome (chrome-linux64 since
# it ships Chrome for Testing builds).
BUNDLED_GLOBS = ("chromium-*/chrome-linux*/chrome",)

NO_BROWSER = (
    "no Chromium for the browser tests. Either install Debian's "
    "(`apt-get install -y --no-install-recommends chromium`, as .ci/run does), or let "
    "`make test` fetch Playwright's own into {cache} (`{python} -m playwright install "
    "chromium` with PLAYWRIGHT_BROWSERS_PATH={cache}; it needs the internet){reason}")


class NoBrowser(Exception):
    """Neither a system Chromium nor Playwright's could be found or fetched."""


def bundled_chromium(cache: Path) -> Path | None:
    """Playwright's Chromium in `cache`, the newest revision when there are several."""
    found = [p for pattern in BUNDLED_GLOBS for p in cache.glob(pattern) if p.is_file()]
    return max(found, key=lambda p: _revision(p.relative_to(cache).parts[0]), default=None)


def _revision(folder: str) -> int:
    tail = folder.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def find_browser(system: Path = SYSTEM_CHROMIUM, cache: Path = CACHE) -> Path | None:
    """The Chromium to drive without fetching anything: the system one first."""
    if system.is_file():
        return system
    return bundled_chromium(cache)


def missing(cache: Path = CACHE, reason: str = "") -> str:
    """The one message the browser tests fail with when there is no browser."""
    return NO_BROWSER.format(cache=cache, python=sys.executable,
                             reason=f" ({reason})" if reason else "")


def playwright_install(cache: Path) -> str:
    """Run `playwright install chromium` into `cache`; an empty string, or why it failed."""
    env = {**os.environ, "PLAYWRIGHT_BROWSERS_PATH": str(cache)}
    try:
        done = subprocess.run([sys.executable, "-m", "playwright", "install", "chromium"],
                              env=env, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return ""
    # Playwright prints each failed try as "Error: ..." followed by a stack and an object dump.
    errors = [line.strip() for line in (done.stderr + done.stdout).splitlines()
              if line.startswith("Error")]
    # Each try repeats the same lines; once each says it all.
    return "; ".join(dict.fromkeys(errors)) or f"playwright install exited {done.returncode}"


def ensure_browser(system: Path = SYSTEM_CHROMIUM, cache: Path = CACHE,
                   install: Callable[[Path], str] = playwright_install,
                   say: Callable[[str], None] = print) -> Path:
    """The system Chromium, else Playwright's in `cache`, fetched once (saying so) if absent."""
    found = find_browser(system, cache)
    if found is not None:
        return found
    say(f"no {system}: fetching Playwright's Chromium into {cache} (once; later runs reuse it)")
    problem = install(cache)
    found = bundled_chromium(cache)
    if found is None:
        raise NoBrowser(missing(cache, problem or "the download left no browser behind"))
    return found


def main() -> int:
    try:
        ensure_browser()
    except NoBrowser as exc:
        # Not fatal here: the rest of the suite still runs, and the browser tests fail with
        # this same message.
        print(f"warning: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Serve with uvicorn in QA_WORKERS processes: the app factory, the worker count and a shared
metrics folder come from here; every other argument goes to uvicorn unchanged."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from uvicorn.main import main as uvicorn_cli  # noqa: E402

from service.settings import InvalidSettings, from_environment  # noqa: E402

APP = "service.app:create_app"


def clear(folder: Path) -> None:
    """Empty a metrics folder: files left by an earlier run would be summed into this one."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.glob("*.db"):
        path.unlink(missing_ok=True)


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
    try:
        uvicorn_cli.main(args=["--factory", APP, "--workers", str(settings.workers), *args],
                         prog_name="uvicorn", standalone_mode=False)
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

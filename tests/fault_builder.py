"""A builder process for the fault tests: `python -m tests.fault_builder MODE CORPUS INDEX`.

loop  rebuild forever (a changed note each time) with the fake encoder, announcing each build
once  one build through the real CLI, with the fake encoder
hold  take the build lock and keep it until stdin closes
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

from service.index import store
from service.index.indexing import BuildReport, build_index
from service.settings import Settings
from tests.fakes import FakeEncoder


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def loop(corpus: Path, index: Path) -> None:
    settings = Settings(corpus_dir=corpus, index_dir=index, keep_versions=3)
    encoder = FakeEncoder()
    _say("ready")
    for n in itertools.count():
        (corpus / "note.txt").write_text(f"Build note\n\nThis is build number {n}.\n", "utf-8")
        _say(f"start {n}")
        report = build_index(settings, encoder=encoder)
        _say(f"done {n} {report.version}")


def once(corpus: Path, index: Path) -> int:
    from scripts import build_index as cli

    def fake_build(settings: Settings, **kwargs: Any) -> BuildReport:
        return build_index(settings, encoder=FakeEncoder(), **kwargs)

    cli.build_index = fake_build  # type: ignore[attr-defined]
    return cli.main(["--corpus", str(corpus), "--index", str(index)])


def hold(index: Path) -> None:
    with store.build_lock(index):
        _say("locked")
        sys.stdin.read()


def main(argv: list[str]) -> int:
    mode, corpus, index = argv[0], Path(argv[1]), Path(argv[2])
    if mode == "loop":
        loop(corpus, index)
    elif mode == "once":
        return once(corpus, index)
    elif mode == "hold":
        hold(index)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

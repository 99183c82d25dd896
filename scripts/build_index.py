"""Build (or rebuild) the index from a corpus folder: a thin CLI over service.indexing."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from service import store  # noqa: E402
from service.corpus import CorpusError  # noqa: E402
from service.encoder import EncoderError  # noqa: E402
from service.indexing import BuildError, build_index, is_stale  # noqa: E402
from service.settings import Settings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, help="corpus folder (default: QA_CORPUS_DIR)")
    parser.add_argument("--index", type=Path, help="index folder (default: QA_INDEX_DIR)")
    parser.add_argument("--if-stale", action="store_true",
                        help="do nothing when the index matches the corpus and settings")
    parser.add_argument("--force", action="store_true", help="publish a new version regardless")
    parser.add_argument("--strict", action="store_true",
                        help="fail on any unusable file instead of skipping it")
    args = parser.parse_args(argv)
    # Third-party libraries (the ONNX quantizer) log chattily at INFO on the root logger.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("service").setLevel(logging.INFO)
    overrides = {k: v for k, v in (("corpus_dir", args.corpus), ("index_dir", args.index)) if v}
    settings = Settings(**overrides)
    if args.if_stale:
        reason = is_stale(settings)
        if reason is None:
            print(f"index in {settings.index_dir} is up to date")
            return 0
        print(f"building index: {reason}")
    try:
        report = build_index(settings, strict=args.strict, force=args.force, progress=print)
    except (CorpusError, BuildError, EncoderError, store.BuildLocked) as exc:
        print(f"build failed, nothing published: {exc}", file=sys.stderr)
        return 1
    for problem in report.skipped:
        print(f"skipped {problem}", file=sys.stderr)
    if not report.published:
        print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build (or rebuild) the index from a corpus folder, list its versions, or roll back: a thin
CLI over service.index.indexing and service.index.store. With QA_COLLECTIONS_FILE,
`--collection NAME` acts on one collection and `--all` builds each in turn."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from service.catalog import CatalogError, read_catalog  # noqa: E402
from service.index import store  # noqa: E402
from service.index.encoder import EncoderError  # noqa: E402
from service.index.indexing import BuildError, build_index, is_stale  # noqa: E402
from service.index.progress import Progress  # noqa: E402
from service.index.shards import embed_shard, parse_shard  # noqa: E402
from service.ingest.corpus import CorpusError  # noqa: E402
from service.settings import Settings  # noqa: E402

# Document ids listed per kind of change; a first build of a large corpus adds thousands.
SHOWN = 10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, help="corpus folder (default: QA_CORPUS_DIR)")
    parser.add_argument("--index", type=Path, help="index folder (default: QA_INDEX_DIR)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--collection", metavar="NAME",
                       help="act on this collection of QA_COLLECTIONS_FILE")
    which.add_argument("--all", action="store_true",
                       help="build every collection of QA_COLLECTIONS_FILE (or the one "
                            "default without it); one failed build leaves the others")
    parser.add_argument("--if-stale", action="store_true",
                        help="do nothing when the index matches the corpus and settings")
    parser.add_argument("--force", action="store_true", help="publish a new version regardless")
    parser.add_argument("--strict", action="store_true",
                        help="fail on any unusable file instead of skipping it")
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("--list", action="store_true",
                         help="list the published versions (checksums verified) and exit")
    actions.add_argument("--rollback", nargs="?", const="", metavar="VERSION",
                         help="serve VERSION (default: the one before the current) and exit")
    actions.add_argument("--shard", metavar="I/N",
                         help="embed shard I of N (0-based) into --shards-dir; publishes nothing")
    actions.add_argument("--merge-shards", action="store_true",
                         help="publish a version whose new embeddings come from the shards "
                              "in --shards-dir")
    parser.add_argument("--shards-dir", type=Path, metavar="DIR",
                        help="folder of embedded shards (with --shard or --merge-shards)")
    args = parser.parse_args(argv)
    if (args.shard or args.merge_shards) and args.shards_dir is None:
        parser.error("--shard and --merge-shards need --shards-dir")
    # Third-party libraries (the ONNX quantizer) log chattily at INFO on the root logger.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("service").setLevel(logging.INFO)
    overrides = {k: v for k, v in (("corpus_dir", args.corpus), ("index_dir", args.index)) if v}
    settings = Settings(**overrides)
    if args.collection is not None or args.all:
        if overrides:
            parser.error("--corpus and --index name one folder; with --collection or --all "
                         "the collections file names them")
        try:
            collections = read_catalog(settings)
        except CatalogError as exc:
            print(f"cannot read the collections: {exc}", file=sys.stderr)
            return 2
        if args.all:
            if args.list or args.rollback is not None or args.shard or args.merge_shards:
                parser.error("--list, --rollback and the shard options take one --collection")
            named = settings.collections_file is not None
            failed = [c.name for c in collections
                      if _run(args, c.settings(settings), c.name if named else None) != 0]
            if failed:
                print(f"failed: {', '.join(failed)} (the others were built; each failed "
                      "collection keeps serving its current version)", file=sys.stderr)
            return 1 if failed else 0
        found = [c for c in collections if c.name == args.collection]
        if not found:
            print(f"no collection {args.collection!r}; declared: "
                  f"{', '.join(c.name for c in collections)}", file=sys.stderr)
            return 2
        return _run(args, found[0].settings(settings), found[0].name)
    return _run(args, settings)


def _run(args: argparse.Namespace, settings: Settings, name: str | None = None) -> int:
    """One index folder: list, roll back or build, as the arguments say."""
    if name is not None:
        print(f"collection {name}: {settings.corpus_dir} -> {settings.index_dir}")
    if args.list:
        return _list(settings.index_dir)
    if args.rollback is not None:
        return _rollback(settings.index_dir, args.rollback or None)
    if args.shard:
        return _shard(settings, args.shard, args.shards_dir)
    if args.if_stale:
        reason = is_stale(settings)
        if reason is None:
            print(f"index in {settings.index_dir} is up to date")
            return 0
        print(f"building index: {reason}")
    try:
        report = build_index(settings, strict=args.strict, force=args.force, progress=print,
                             tracker=_tracker(),
                             shards=args.shards_dir if args.merge_shards else None)
    except (CorpusError, BuildError, EncoderError, store.BuildLocked, OSError) as exc:
        # OSError: a full disk or a failed write; the staging folder is already removed.
        print(f"build failed, nothing published: {exc}", file=sys.stderr)
        return 1
    for problem in report.skipped:
        print(f"skipped {problem}", file=sys.stderr)
    if not report.published:
        print(report.summary())
    for what, ids in (("added", report.added), ("changed", report.changed),
                      ("removed", report.removed)):
        if ids:
            more = f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
            print(f"  {what}: {', '.join(ids[:SHOWN])}{more}")
    return 0


def _shard(settings: Settings, which: str, folder: Path) -> int:
    try:
        shard, of = parse_shard(which)
    except ValueError as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 2
    try:
        report = embed_shard(settings, shard, of, folder)
    except (CorpusError, BuildError, EncoderError, OSError) as exc:
        print(f"shard {which} failed, nothing written: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def _tracker() -> Progress:
    """On a terminal, one line rewritten in place a few times a second; otherwise (a log, CI)
    a plain line every ten seconds."""
    if sys.stderr.isatty():
        def live(line: str) -> None:
            print(f"\r\x1b[K{line}", end="" if "left" in line else "\n", file=sys.stderr,
                  flush=True)
        return Progress(live, every=0.2)
    return Progress(lambda line: print(line, file=sys.stderr, flush=True), every=10.0)


def _list(index_dir: Path) -> int:
    versions = store.describe_versions(index_dir)
    if not versions:
        print(f"no published versions in {index_dir}")
        return 1
    for v in versions:
        state = (f"DAMAGED: {v.problem}" if v.problem
                 else f"{v.documents} documents, {v.chunks} chunks")
        print(f"{'*' if v.current else ' '} {v.name}  built {v.built_at or '?'}  {state}")
    return 0


def _rollback(index_dir: Path, version: str | None) -> int:
    before = store.current_or_none(index_dir)
    try:
        after = store.rollback(index_dir, version)
    except (store.NoSuchVersion, store.IndexUnavailable, store.BuildLocked) as exc:
        print(f"rollback failed, still serving {before}: {exc}", file=sys.stderr)
        return 1
    print(f"now serving {after} (was {before}); running services pick it up on their next "
          "reload (QA_RELOAD_INTERVAL, or POST /api/admin/reload)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

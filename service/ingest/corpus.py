"""Reading a corpus folder into documents whose text is exactly what citations point into."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from service.ingest.cache import ExtractCache
from service.ingest.document import Document, Extraction, Problem, ReadError
from service.ingest.plain import decode as _decode
from service.ingest.registry import SUFFIXES, format_for, mismatch
from service.ingest.sandbox import ParseLimits, ReaderPool, read_isolated

__all__ = ["SUFFIXES", "CorpusError", "Document", "ParseLimits", "Problem", "decode",
           "html_to_text", "iter_files", "parse_file", "read_documents", "read_file",
           "visible_files"]

log = logging.getLogger(__name__)


class CorpusError(Exception):
    """The corpus cannot be used at all (no usable documents, duplicate ids, missing folder)."""


def html_to_text(markup: str) -> tuple[str, str]:
    """The title and visible text of an HTML page (service.ingest.webpage's, imported when
    first needed: serving processes never need it)."""
    from service.ingest import webpage

    return webpage.html_to_text(markup)


def decode(data: bytes, max_bytes: int) -> str:
    """Decode file bytes the way `Path.read_text(encoding="utf-8")` does, or raise ValueError."""
    if len(data) > max_bytes:
        raise ValueError(f"file is {len(data):,} bytes, over the {max_bytes:,}-byte limit")
    return _decode(data)


def parse_file(doc_id: str, data: bytes, max_bytes: int,
               limits: ParseLimits | None = None, pool: ReaderPool | None = None) -> Extraction:
    """Turn one file's bytes into documents; `doc_id` is its path relative to the corpus
    folder. With `pool` (or `limits`), readers of binary formats run in a worker process
    under its limits."""
    fmt = format_for(doc_id)
    if fmt is None:
        return [], [Problem(doc_id, f"unsupported file type {Path(doc_id).suffix.lower()!r}")]
    if len(data) > max_bytes:
        return [], [Problem(doc_id, f"file is {len(data):,} bytes, over the "
                                    f"{max_bytes:,}-byte limit")]
    wrong = mismatch(fmt, data)
    if wrong:
        return [], [Problem(doc_id, wrong)]
    if fmt.isolated and pool is not None:
        return pool.read(fmt.read, fmt.name, data, doc_id)
    if fmt.isolated and limits is not None:
        return read_isolated(fmt.read, fmt.name, data, doc_id, limits)
    try:
        return fmt.read(data, doc_id)
    except ReadError as exc:
        return [], [Problem(doc_id, str(exc))]


def _walk(corpus_dir: Path) -> Iterator[tuple[Path, bool]]:
    """(path, is a symbolic link) for every non-hidden file and every linked folder under the
    folder, in a stable order. Linked folders are never entered."""
    found: list[tuple[Path, bool]] = []
    for folder, dirs, files in os.walk(corpus_dir, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        base = Path(folder)
        # A link to a folder is listed among the folders (and not entered), whatever its name.
        found += [(base / d, True) for d in dirs if (base / d).is_symlink()]
        for name in files:
            if not name.startswith("."):
                path = base / name
                found.append((path, path.is_symlink()))
    yield from sorted(found)


def visible_files(corpus_dir: Path) -> Iterator[Path]:
    """Every file a build looks at (and names if it cannot use it), in a stable order."""
    for path, _ in _walk(corpus_dir):
        yield path


def iter_files(corpus_dir: Path) -> Iterator[Path]:
    """Supported regular files under the corpus folder, in a stable order. Hidden files are
    skipped, and so are symbolic links, to files or folders: a link could bring anything the
    service may read (/etc/passwd, another folder) into answers."""
    for path, link in _walk(corpus_dir):
        if not link and path.suffix.lower() in SUFFIXES and path.is_file():
            yield path


def read_file(path: Path, max_bytes: int) -> bytes:
    """A corpus file's bytes, its size checked before reading and at most max_bytes + 1 read;
    a symbolic link or anything but a regular file raises ValueError."""
    try:
        # O_NONBLOCK: a named pipe put in the corpus must not hang the build on open.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError("a symbolic link (links are not followed)") from None
        raise ValueError(f"cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > max_bytes:
            raise ValueError(f"file is {info.st_size:,} bytes, over the {max_bytes:,}-byte limit")
        return fh.read(max_bytes + 1)  # decode() refuses a file that grew past the limit


def read_documents(
    corpus_dir: Path, max_bytes: int, *, limits: ParseLimits | None = None,
    cache_dir: Path | None = None, threads: int = 1,
    on_file: Callable[[str], None] | None = None,
) -> tuple[list[Document], list[Problem]]:
    """Read every supported file; unusable and unsupported files become problems, duplicate
    ids an error. Binary formats are read in child processes (`limits`, default ones if not
    given), `threads` at a time, and reused from `cache_dir` when the file is unchanged."""
    if not corpus_dir.is_dir():
        raise CorpusError(f"corpus folder {corpus_dir} does not exist")
    limits = limits or ParseLimits()
    cache = ExtractCache(cache_dir) if cache_dir is not None else None
    files = [(path.relative_to(corpus_dir).as_posix(), path, link)
             for path, link in _walk(corpus_dir)]

    def one(item: tuple[str, Path, bool]) -> Extraction:
        # Every file counts towards progress, skipped ones too: the total is all of them.
        try:
            return read_one(item)
        finally:
            if on_file:
                on_file(item[0])

    def read_one(item: tuple[str, Path, bool]) -> Extraction:
        rel, path, link = item
        if link:
            return [], [Problem(rel, "a symbolic link (links are not followed)")]
        if path.suffix.lower() not in SUFFIXES:
            return [], [Problem(rel, f"unsupported file type {path.suffix.lower()!r} "
                                     f"(supported: {', '.join(SUFFIXES)})")]
        try:
            data = read_file(path, max_bytes)
        except ValueError as exc:
            return [], [Problem(rel, str(exc))]
        fmt = format_for(rel)
        key = cache.key(fmt, rel, data) if cache and fmt and fmt.isolated else None
        cached = cache.get(key) if cache and key else None
        result = cached or parse_file(rel, data, max_bytes, pool=pool)
        if cache and key and cached is None and result[0] and not result[1]:
            cache.put(key, result[0])
        return result

    with ReaderPool(limits, threads) as pool, ThreadPoolExecutor(max(1, threads)) as run:
        results = list(run.map(one, files))
    if cache:
        cache.prune()
    docs: list[Document] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for (rel, _, _), (file_docs, file_problems) in zip(files, results, strict=True):
        problems.extend(file_problems)
        for doc in file_docs:
            if doc.id in seen:
                raise CorpusError(
                    f"duplicate document id {doc.id!r}: in {seen[doc.id]} and in {rel}"
                )
            seen[doc.id] = rel
            docs.append(replace(doc, source=rel))
    for problem in problems:
        log.warning("skipped %s", problem)
    if not docs:
        detail = "; ".join(str(p) for p in problems) or (
            f"no {', '.join(SUFFIXES)} files")
        raise CorpusError(f"no usable documents in {corpus_dir}: {detail}")
    return docs, problems

"""Adding, replacing and deleting corpus files over HTTP, checked as the builder reads them."""

from __future__ import annotations

import os
import stat
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from service.index import store
from service.ingest.corpus import SUFFIXES, ParseLimits, iter_files, parse_file, read_file

MAX_ID_CHARS = 512
# NAME_MAX on Linux and most file systems: a longer part fails on write (ENAMETOOLONG).
MAX_PART_BYTES = 255
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Zl", "Zp"})


class InvalidSource(ValueError):
    """A document id or file content the builder would not accept; nothing was written."""


class SourceTooLarge(InvalidSource):
    """The file is over the configured size limit."""


class SourceNotFound(LookupError):
    """No source file has that id."""


@dataclass(frozen=True)
class Stored:
    doc_id: str
    created: bool
    bytes: int
    documents: int


def source_path(corpus_dir: Path, doc_id: str) -> Path:
    """The file `doc_id` names inside the corpus folder. Refuses anything the builder would not
    read back under the same id (absolute paths, `..`, hidden parts, unsupported suffixes,
    symbolic links on the way) and names no file system could hold or a reader could trust."""
    if not doc_id or len(doc_id) > MAX_ID_CHARS:
        raise InvalidSource(f"a document id is 1 to {MAX_ID_CHARS} characters")
    if "\\" in doc_id:
        raise InvalidSource(f"document id {doc_id!r} contains a backslash")
    for ch in doc_id:
        # Control, format (bidi overrides such as U+202E), private-use, surrogate and line or
        # paragraph separator characters: invisible or misleading in a file name.
        if unicodedata.category(ch) in _REFUSED_CATEGORIES:
            raise InvalidSource(f"document id {doc_id!r} contains an invisible or control "
                                f"character (U+{ord(ch):04X})")
    if doc_id.startswith("/"):
        raise InvalidSource(f"document id {doc_id!r} must be a path relative to the corpus folder")
    for part in doc_id.split("/"):
        if part in ("", ".", ".."):
            raise InvalidSource(f"document id {doc_id!r} has an empty, '.' or '..' path part")
        if part.startswith("."):
            raise InvalidSource(f"document id {doc_id!r} names a hidden file or folder, "
                                "which the builder skips")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_PART_BYTES:
            raise InvalidSource(f"document id {doc_id!r}: each folder or file name is at most "
                                f"{MAX_PART_BYTES} bytes (UTF-8)")
    suffix = Path(doc_id).suffix.lower()
    if suffix not in SUFFIXES:
        raise InvalidSource(f"{doc_id}: unsupported file type {suffix!r}; "
                            f"use one of {', '.join(SUFFIXES)}")
    root = corpus_dir.resolve()
    target = root / doc_id
    walked = root
    for part in doc_id.split("/")[:-1]:
        walked = walked / part
        if walked.is_symlink():
            raise InvalidSource(f"document id {doc_id!r}: {walked.relative_to(root)} is a "
                                "symbolic link, which the builder does not follow")
        if walked.exists() and not walked.is_dir():
            raise InvalidSource(f"document id {doc_id!r}: {walked.relative_to(root)} is a "
                                "file, not a folder")
    if target.is_symlink():
        raise InvalidSource(f"document id {doc_id!r} is a symbolic link in the corpus, which "
                            "the builder does not follow")
    return target


def read_original(corpus_dir: Path, rel: str, max_bytes: int) -> bytes:
    """The bytes of corpus file `rel`, for showing the original. Refuses a path that leaves the
    corpus folder or passes through a symlink, anything but a regular file, and files over
    `max_bytes`; the file is opened without following links, so a swap after the checks
    cannot lead elsewhere."""
    root = corpus_dir.resolve()
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") or p.startswith(".") or "\\" in p for p in parts):
        raise SourceNotFound(f"no original file for {rel!r}")
    current = root
    for part in parts:
        current = current / part
        try:
            info = os.lstat(current)
        except OSError:
            raise SourceNotFound(f"the original file {rel!r} is no longer in the corpus") from None
        if stat.S_ISLNK(info.st_mode):
            raise InvalidSource(f"the original file {rel!r} is behind a symbolic link, "
                                "which is not served")
    try:
        fd = os.open(current, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NOCTTY", 0))
    except OSError:
        raise SourceNotFound(f"the original file {rel!r} cannot be opened") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SourceNotFound(f"the original {rel!r} is not a regular file")
        if info.st_size > max_bytes:
            raise SourceTooLarge(f"the original file {rel!r} is {info.st_size:,} bytes, over "
                                 f"the {max_bytes:,}-byte limit")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise SourceTooLarge(f"the original file {rel!r} grew past the {max_bytes:,}-byte limit")
    return data


def _ids_elsewhere(corpus_dir: Path, target: Path, max_bytes: int) -> dict[str, str]:
    """Document id -> file, for every file but `target`. A .txt/.md/.html file's id is its
    path, so only .jsonl files need reading."""
    ids: dict[str, str] = {}
    target = target.resolve()
    for path in iter_files(corpus_dir):
        if path.resolve() == target:
            continue
        rel = path.relative_to(corpus_dir).as_posix()
        if path.suffix.lower() == ".jsonl":
            try:
                data = read_file(path, max_bytes)
            except ValueError:
                continue  # the build skips it too
            docs, _ = parse_file(rel, data, max_bytes)
            ids.update((d.id, rel) for d in docs)
        else:
            ids[rel] = rel
    return ids


def put_source(corpus_dir: Path, doc_id: str, data: bytes, max_bytes: int,
               limits: ParseLimits | None = None) -> Stored:
    """Validate `data` as the builder would (binary formats in a child process under
    `limits`) and write it as `doc_id`, atomically: a build sees the old file or the new one,
    never part of it. Raises InvalidSource, writing nothing."""
    target = source_path(corpus_dir, doc_id)
    if len(data) > max_bytes:
        raise SourceTooLarge(
            f"{doc_id}: file is {len(data):,} bytes, over the {max_bytes:,}-byte limit")
    docs, problems = parse_file(doc_id, data, max_bytes, limits or ParseLimits())
    if problems:
        # Stricter than a build, which skips a bad record: an upload can still be fixed.
        raise InvalidSource("; ".join(str(p) for p in problems))
    seen: set[str] = set()
    for doc in docs:
        if doc.id in seen:
            raise InvalidSource(f"{doc_id}: duplicate document id {doc.id!r} inside the file")
        seen.add(doc.id)
    if target.is_dir():
        raise InvalidSource(f"{doc_id} is a folder in the corpus")
    elsewhere = _ids_elsewhere(corpus_dir, target, max_bytes)
    for doc in docs:
        if doc.id in elsewhere:
            raise InvalidSource(
                f"{doc_id}: duplicate document id {doc.id!r}, already in {elsewhere[doc.id]}")
    created = not target.exists()
    _write_atomic(target, data)
    return Stored(doc_id, created, len(data), len(docs))


def delete_source(corpus_dir: Path, doc_id: str) -> None:
    """Remove the file `doc_id` names; the next build drops its documents."""
    target = source_path(corpus_dir, doc_id)
    if not target.is_file():
        raise SourceNotFound(f"no file {doc_id!r} in the corpus (a record inside a .jsonl file "
                             "is changed by replacing that file)")
    target.unlink()
    store.fsync_dir(target.parent)


def _write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # A dot-name: the builder skips hidden files, so it never reads a half-written upload.
    fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    store.fsync_dir(target.parent)


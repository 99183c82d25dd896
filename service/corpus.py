"""Reading source files into documents whose text is exactly what citations point into."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from service import markup

log = logging.getLogger(__name__)

SUFFIXES = (".txt", ".md", ".html", ".htm", ".jsonl")


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Problem:
    """A source the build could not use, and why (shown to whoever runs the build)."""

    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


class CorpusError(Exception):
    """The corpus cannot be used at all (no usable documents, duplicate ids, missing folder)."""


def decode(data: bytes, max_bytes: int) -> str:
    """Decode file bytes the way `Path.read_text(encoding="utf-8")` does, or raise ValueError."""
    if len(data) > max_bytes:
        raise ValueError(f"file is {len(data):,} bytes, over the {max_bytes:,}-byte limit")
    if b"\x00" in data[:8192]:
        raise ValueError("binary file (contains NUL bytes)")
    try:
        # Universal newlines, like read_text: a citation checked with read_text must match.
        text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline=None).read()
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 (byte {exc.start}: {exc.reason})") from None
    if not text.strip():
        raise ValueError("empty file")
    return text


def parse_file(doc_id: str, data: bytes, max_bytes: int) -> tuple[list[Document], list[Problem]]:
    """Turn one file's bytes into documents; `doc_id` is its path relative to the corpus folder."""
    try:
        text = decode(data, max_bytes)
    except ValueError as exc:
        return [], [Problem(doc_id, str(exc))]
    suffix = Path(doc_id).suffix.lower()
    if suffix == ".jsonl":
        return _parse_jsonl(doc_id, text)
    if suffix in (".html", ".htm"):
        title, visible = html_to_text(text)
        if not visible.strip():
            return [], [Problem(doc_id, "no visible text in the HTML")]
        return [Document(doc_id, title or _first_line(visible) or doc_id, visible)], []
    if suffix == ".md":
        title = markup.front_matter_title(text) or _first_line(markup.visible(text))
        return [Document(doc_id, title or doc_id, text)], []
    if suffix == ".txt":
        return [Document(doc_id, _first_line(text) or doc_id, text)], []
    return [], [Problem(doc_id, f"unsupported file type {suffix!r}")]


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:200]
    return ""


def _parse_jsonl(source: str, text: str) -> tuple[list[Document], list[Problem]]:
    docs: list[Document] = []
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(where, f"not valid JSON ({exc.msg})"))
            continue
        if not isinstance(record, dict):
            problems.append(Problem(where, "a record must be a JSON object"))
            continue
        raw_id = record.get("_id", record.get("id"))
        body = record.get("text")
        if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool) or str(raw_id) == "":
            problems.append(Problem(where, 'record has no "_id" or "id"'))
            continue
        if not isinstance(body, str) or not body.strip():
            problems.append(Problem(where, 'record has no non-empty "text"'))
            continue
        title = record.get("title")
        docs.append(Document(str(raw_id), title.strip() if isinstance(title, str) else "", body))
    if not docs and not problems:
        problems.append(Problem(source, "no records"))
    return docs, problems


def _walk(corpus_dir: Path) -> Iterator[tuple[Path, bool]]:
    """(path, is a symbolic link) for every supported, non-hidden file and every linked folder
    under the folder, in a stable order. Linked folders are never entered."""
    found: list[tuple[Path, bool]] = []
    for folder, dirs, files in os.walk(corpus_dir, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        base = Path(folder)
        # A link to a folder is listed among the folders (and not entered), whatever its name.
        found += [(base / d, True) for d in dirs if (base / d).is_symlink()]
        for name in files:
            path = base / name
            if not name.startswith(".") and path.suffix.lower() in SUFFIXES:
                found.append((path, path.is_symlink()))
    yield from sorted(found)


def iter_files(corpus_dir: Path) -> Iterator[Path]:
    """Supported regular files under the corpus folder, in a stable order. Hidden files are
    skipped, and so are symbolic links, to files or folders: a link could bring anything the
    service may read (/etc/passwd, another folder) into answers."""
    for path, link in _walk(corpus_dir):
        if not link and path.is_file():
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


def read_documents(corpus_dir: Path, max_bytes: int) -> tuple[list[Document], list[Problem]]:
    """Read every supported file; unusable files become problems, duplicate ids an error."""
    if not corpus_dir.is_dir():
        raise CorpusError(f"corpus folder {corpus_dir} does not exist")
    docs: list[Document] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for path, link in _walk(corpus_dir):
        rel = path.relative_to(corpus_dir).as_posix()
        if link:
            problems.append(Problem(rel, "a symbolic link (links are not followed)"))
            continue
        if not path.is_file():
            continue
        try:
            data = read_file(path, max_bytes)
        except ValueError as exc:
            problems.append(Problem(rel, str(exc)))
            continue
        file_docs, file_problems = parse_file(rel, data, max_bytes)
        problems.extend(file_problems)
        for doc in file_docs:
            if doc.id in seen:
                raise CorpusError(
                    f"duplicate document id {doc.id!r}: in {seen[doc.id]} and in {rel}"
                )
            seen[doc.id] = rel
            docs.append(doc)
    for problem in problems:
        log.warning("skipped %s", problem)
    if not docs:
        detail = "; ".join(str(p) for p in problems) or "no .txt, .md, .html or .jsonl files"
        raise CorpusError(f"no usable documents in {corpus_dir}: {detail}")
    return docs, problems


_BLOCK_TAGS = frozenset(
    "address article aside blockquote br dd details div dl dt fieldset figcaption figure footer "
    "form h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section summary table td th tr "
    "ul".split()
)
_HIDDEN_TAGS = frozenset("script style noscript template head svg iframe object canvas".split())


class _VisibleText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self.hidden = 0
        self.in_title = False
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        elif tag in _HIDDEN_TAGS:
            self.hidden += 1
        elif tag == "pre":
            self.pre += 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n\n" if tag.startswith("h") or tag in ("p", "li", "tr") else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in _HIDDEN_TAGS:
            self.hidden = max(0, self.hidden - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title_parts.append(data)
        elif not self.hidden:
            self.parts.append(data if self.pre else _squash(data))


def _squash(data: str) -> str:
    # Keep one space at either edge so inline tags do not glue words together.
    core = " ".join(data.split())
    if not core:
        return " " if data else ""
    lead = " " if data[:1].isspace() else ""
    trail = " " if data[-1:].isspace() else ""
    return f"{lead}{core}{trail}"


def html_to_text(markup: str) -> tuple[str, str]:
    """Visible text of an HTML page (blocks on their own lines) and its <title>."""
    parser = _VisibleText()
    # Python's HTMLParser rescans to the end of the input for every "<" it cannot close, which
    # is quadratic when nothing after it closes: "</" * 100_000 took 26 s. Past the last ">"
    # no tag can close anyway and the parser shows such text as it is, so escape it up front.
    tail = markup.rfind(">") + 1
    if "<" in markup[tail:]:
        markup = markup[:tail] + markup[tail:].replace("&", "&amp;").replace("<", "&lt;")
    parser.feed(markup)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    text = "\n".join(out).strip("\n") + "\n"
    return " ".join("".join(parser.title_parts).split()), text

"""The one table of formats: which reader a file gets (by suffix), checked against its content."""

from __future__ import annotations

import importlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from service.ingest.document import Extraction

# Bump when a reader's output changes: cached extractions of older readers are not reused.
READERS_VERSION = 3


@dataclass(frozen=True)
class Lazy:
    """A reader named by its module, imported when first called: a serving process reads no
    files, and the readers' libraries (pptx, docx, pdfium, trafilatura, lxml) took a third of
    a second of its start. Picklable, for readers run in a child process."""

    module: str
    function: str = "read"

    def __call__(self, data: bytes, name: str) -> Extraction:
        reader = getattr(importlib.import_module(f"service.ingest.{self.module}"), self.function)
        result: Extraction = reader(data, name)
        return result


@dataclass(frozen=True)
class Format:
    """A reader and how to recognise and serve its files. `content` is what `sniff` must say
    of the bytes ("text" formats are checked by their reader's decoding instead); `isolated`
    readers run in a child process with time and memory limits; `inline` originals may be
    shown by the browser, the rest are downloads."""

    name: str
    suffixes: tuple[str, ...]
    read: Lazy
    media_type: str
    content: str = "text"
    isolated: bool = False
    inline: bool = False


FORMATS: tuple[Format, ...] = (
    Format("text", (".txt",), Lazy("plain"), "text/plain; charset=utf-8", inline=True),
    # Served as plain text: browsers download text/markdown instead of showing it.
    Format("markdown", (".md",), Lazy("markdown"), "text/plain; charset=utf-8", inline=True),
    Format("html", (".html", ".htm"), Lazy("webpage"), "text/html; charset=utf-8", isolated=True),
    Format("jsonl", (".jsonl",), Lazy("jsonl"), "application/x-ndjson"),
    Format("pdf", (".pdf",), Lazy("pdf"), "application/pdf", "pdf", isolated=True, inline=True),
    Format("docx", (".docx",), Lazy("word"),
           "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
           "docx", isolated=True),
    Format("pptx", (".pptx",), Lazy("powerpoint"),
           "application/vnd.openxmlformats-officedocument.presentationml.presentation",
           "pptx", isolated=True),
)
BY_NAME = {f.name: f for f in FORMATS}
BY_SUFFIX = {suffix: f for f in FORMATS for suffix in f.suffixes}
SUFFIXES = tuple(BY_SUFFIX)

_LABELS = {"pdf": "a PDF", "docx": "a Word document", "pptx": "a PowerPoint presentation",
           "zip": "a ZIP archive", "binary": "binary data", "text": "text"}


def format_for(name: str) -> Format | None:
    return BY_SUFFIX.get(PurePosixPath(name).suffix.lower())


def sniff(data: bytes) -> str:
    """What the bytes look like: pdf, docx, pptx, zip, binary or text."""
    # Readers tolerate a little junk before the PDF header, as viewers do.
    if b"%PDF" in data[:1024]:
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        try:
            names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
        except (zipfile.BadZipFile, ValueError, EOFError):
            return "zip"
        if "word/document.xml" in names:
            return "docx"
        if "ppt/presentation.xml" in names:
            return "pptx"
        return "zip"
    return "binary" if b"\x00" in data[:8192] else "text"


def mismatch(fmt: Format, data: bytes) -> str | None:
    """Why the content is not what the suffix says, or None when it is."""
    if fmt.content == "text":
        return None
    found = sniff(data)
    if found == fmt.content or (found == "zip" and fmt.content in ("docx", "pptx")):
        # A damaged package is the reader's to describe.
        return None
    return f"not {_LABELS[fmt.content]} file: its content looks like {_LABELS[found]}"

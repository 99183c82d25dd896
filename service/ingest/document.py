"""What a reader produces: documents whose text citations point into, or named problems."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass

Span = tuple[int, int]


@dataclass(frozen=True)
class Document:
    """`text` is exactly what citations index. `pages` holds the start offset of each page or
    slide of a paged original (empty otherwise); `headings` the spans of lines the original
    marks as headings (by style, not by guess)."""

    id: str
    title: str
    text: str
    pages: tuple[int, ...] = ()
    headings: tuple[Span, ...] = ()
    # The corpus file the document came from (a .jsonl file holds many); set by the corpus.
    source: str = ""

    def page_at(self, offset: int) -> int | None:
        """The 1-based page holding `offset`, or None for a document without pages."""
        if not self.pages:
            return None
        return max(1, bisect_right(self.pages, offset))


@dataclass(frozen=True)
class Problem:
    """A source the build could not use, and why (shown to whoever runs the build)."""

    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


class ReadError(ValueError):
    """The whole file is unusable; the message says why in a reader's words."""


Extraction = tuple[list[Document], list[Problem]]
Reader = Callable[[bytes, str], Extraction]


def first_line(text: str) -> str:
    """The first non-blank line without Markdown heading marks, as a fallback title."""
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:200]
    return ""


class TextBuilder:
    """Lays out extracted blocks as text: blocks apart by a blank line, lines of one block
    (list items, table rows) on consecutive lines; records heading spans and page starts."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0
        self._sep = ""
        self.headings: list[Span] = []
        self.pages: list[int] = []

    def _write(self, text: str) -> None:
        if self._length:
            self._parts.append(self._sep)
            self._length += len(self._sep)
        self._parts.append(text)
        self._length += len(text)

    def block(self, text: str, *, heading: bool = False) -> None:
        # A heading wrapped over lines is still one line: the chunker takes a line for one.
        text = " ".join(text.split()) if heading else text.strip()
        if not text:
            return
        # Right after a page break the separator is already written.
        self._sep = "\n\n" if self._sep else ""
        start = self._length + (len(self._sep) if self._length else 0)
        self._write(text)
        if heading:
            self.headings.append((start, start + len(text)))
        self._sep = "\n\n"

    def line(self, text: str) -> None:
        """A line of the current run of lines; a run starts after a blank line."""
        text = text.rstrip()
        if not text.strip():
            return
        self._write(text)
        self._sep = "\n"

    def end_run(self) -> None:
        if self._sep:
            self._sep = "\n\n"

    def page(self, *, continued: bool = False) -> None:
        """Start the next page; an empty page still gets its number. A `continued` page
        goes on with the paragraph the page before ended in: on the next line, not a new
        block, so a sentence across the break stays one sentence."""
        self._sep = "\n" if continued else "\n\n"
        if self._length:
            self._parts.append(self._sep)
            self._length += len(self._sep)
            self._sep = ""
        self.pages.append(self._length)

    def document(self, name: str, title: str, *, paged: bool = False) -> Document:
        text = "".join(self._parts).rstrip() + "\n"
        if not text.strip():
            raise ReadError("no text in the file")
        headings = tuple(self.headings)
        if not title:
            title = text[headings[0][0]:headings[0][1]] if headings else first_line(text)
        return Document(name, " ".join(title.split())[:200] or name, text,
                        tuple(self.pages) if paged else (), headings)


def cell_text(text: str) -> str:
    """A table cell on one line: tabs separate cells, so none may be inside one."""
    return " ".join(text.split())

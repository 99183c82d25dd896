"""Cleaning and splitting: choose which spans of a document become chunks, never edit them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from service.corpus import Document

Span = tuple[int, int]

HARD_MAX_CHARS = 1200


@dataclass(frozen=True)
class Chunk:
    """A passage `doc.text[start:end]`, its section heading and its sentence spans (absolute)."""

    doc_id: str
    start: int
    end: int
    heading: str
    sentences: tuple[Span, ...]


# A run of CSS declarations, optionally behind a class or id selector, e.g. the scraped
# ".css-uphcpbposition:absolute;left:0;top:-87px;" glued in front of a heading.
_CSS_RUN = re.compile(
    r"\s*(?:[.#][\w-]+?)?(?:\{\s*)?(?:[a-z-]+\s*:\s*[^;{}\n]{1,80};\s*){2,}\}?", re.IGNORECASE
)
_CSS_RULE = re.compile(r"^\s*(?:[@.#]?[\w\s.#:>,*\[\]=\"'-]*\{[^}]*\}?\s*|\})\s*$")
_TAG_ONLY = re.compile(r"^\s*(?:<[^<>\n]{1,300}>\s*)+$")
_CRUMB_SEPARATORS = re.compile(r"\s(?:>|›|»|/|\|)\s")
_MD_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
_SETEXT = re.compile(r"^\s{0,3}(?:=+|-+)\s*$")
_BULLET = re.compile(r"\s*(?:[•·▪‣◦*+\-–—]|\d{1,3}[.)])\s+")
_SENTENCE_END = re.compile(r"([.!?…]+)([\"'”’)\]]*)(\s+)")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs e.g i.e eg ie inc ltd co corp no fig figs al approx ca cf "
    "eq vol pp ph.d u.s u.k a.m p.m dept est govt jan feb mar apr jun jul aug sep sept oct "
    "nov dec".split()
)
_NEXT_STARTS_SENTENCE = re.compile(r"[\"'“‘(\[]?[A-Z0-9•¿¡]|[^\x00-\x7f]")


def split(doc: Document, max_chars: int = 700) -> list[Chunk]:
    """Chunks along section, paragraph and sentence boundaries, each at most `max_chars` long."""
    max_chars = min(max_chars, HARD_MAX_CHARS)
    chunks: list[Chunk] = []
    for heading, paragraphs in _sections(doc.text):
        pending: list[Span] = []
        for paragraph in paragraphs:
            sentences = [
                piece
                for sentence in split_sentences(doc.text, *paragraph)
                for piece in _cap(doc.text, sentence, max_chars)
            ]
            if not sentences:
                continue
            if pending and sentences[-1][1] - pending[0][0] > max_chars:
                chunks.append(_make(doc.id, heading, pending))
                pending = []
            # A paragraph too long for one chunk is cut into pieces of similar size,
            # not one full chunk and a scrap.
            length = sentences[-1][1] - sentences[0][0]
            target = length / -(-length // max_chars) if length > max_chars else max_chars
            for sentence in sentences:
                if pending and (
                    sentence[1] - pending[0][0] > max_chars
                    or pending[-1][1] - pending[0][0] >= target
                ):
                    chunks.append(_make(doc.id, heading, pending))
                    pending = []
                pending.append(sentence)
        if pending:
            chunks.append(_make(doc.id, heading, pending))
    return chunks


def _make(doc_id: str, heading: str, sentences: list[Span]) -> Chunk:
    return Chunk(doc_id, sentences[0][0], sentences[-1][1], heading, tuple(sentences))


def _cap(text: str, span: Span, max_chars: int) -> Iterator[Span]:
    """Cut an over-long sentence at whitespace so no chunk exceeds the limit."""
    start, end = span
    while end - start > max_chars:
        cut = text.rfind(" ", start + max_chars // 2, start + max_chars)
        cut = cut if cut > start else start + max_chars
        piece = _trim(text, start, cut)
        if piece:
            yield piece
        start = cut
        while start < end and text[start].isspace():
            start += 1
    piece = _trim(text, start, end)
    if piece:
        yield piece


def _trim(text: str, start: int, end: int) -> Span | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if end > start else None


def _lines(text: str) -> Iterator[Span]:
    start = 0
    for match in re.finditer("\n", text):
        yield start, match.start()
        start = match.end()
    if start < len(text):
        yield start, len(text)


def _sections(text: str) -> Iterator[tuple[str, list[Span]]]:
    """(heading, paragraph spans) per section; noise lines and headings never enter paragraphs."""
    heading = ""
    paragraphs: list[Span] = []
    current: Span | None = None
    lines = list(_lines(text))
    for i, (start, end) in enumerate(lines):
        line = text[start:end]
        following = text[lines[i + 1][0] : lines[i + 1][1]] if i + 1 < len(lines) else ""
        kind, content = classify_line(line, following, lone=_is_lone(text, lines, i))
        if kind == "text":
            content_start = start + content
            current = (current[0], end) if current else (content_start, end)
            continue
        if current:
            paragraphs.append(current)
            current = None
        if kind == "heading":
            if paragraphs:
                yield heading, paragraphs
                paragraphs = []
            heading = _heading_text(line[content:])
        elif kind == "underline" and paragraphs:
            # A setext underline turns the paragraph just above it into a heading.
            last = paragraphs.pop()
            if paragraphs:
                yield heading, paragraphs
                paragraphs = []
            heading = _heading_text(text[last[0] : last[1]])
    if current:
        paragraphs.append(current)
    if paragraphs:
        yield heading, paragraphs


def _is_lone(text: str, lines: list[Span], i: int) -> bool:
    """True when line i is a paragraph of its own (blank or no line on either side)."""
    before = i == 0 or not text[lines[i - 1][0] : lines[i - 1][1]].strip()
    after = i + 1 >= len(lines) or not text[lines[i + 1][0] : lines[i + 1][1]].strip()
    return before and after


def _heading_text(raw: str) -> str:
    match = _MD_HEADING.match(raw)
    return " ".join((match.group(2) if match else raw).split())


def classify_line(line: str, following: str = "", *, lone: bool = True) -> tuple[str, int]:
    """Kind of one line ('blank', 'noise', 'heading', 'underline', 'text') and where its
    content starts (past any glued-on CSS)."""
    if not line.strip():
        return "blank", 0
    if _SETEXT.match(line) and len(line.strip()) >= 3:
        return "underline", 0
    if _CSS_RULE.match(line) or _TAG_ONLY.match(line):
        return "noise", 0
    offset = 0
    css = _CSS_RUN.match(line)
    if css:
        offset = css.end()
        if not line[offset:].strip():
            return "noise", 0
    rest = line[offset:]
    if _MD_HEADING.match(rest):
        return "heading", offset
    if _is_crumb(rest):
        return "noise", 0
    if (lone or offset) and _looks_like_heading(rest):
        return "heading", offset
    return "text", offset + len(rest) - len(rest.lstrip())


def _is_crumb(line: str) -> bool:
    """Navigation trails such as 'Home > Blog > Careers'."""
    parts = _CRUMB_SEPARATORS.split(line.strip())
    return (
        len(parts) >= 3
        and all(0 < len(p.split()) <= 4 for p in parts)
        and not re.search(r"[.!?]$", line.strip())
    )


def _looks_like_heading(line: str) -> bool:
    stripped = line.strip()
    if not stripped or len(stripped) > 150 or _BULLET.match(line):
        return False
    if len(stripped.split()) > 20 or stripped[-1] in ".,;:!":
        return False
    return stripped[0].isupper() or stripped[0].isdigit()


def split_sentences(text: str, start: int, end: int) -> list[Span]:
    """Sentence spans inside text[start:end]; list markers and edge whitespace excluded."""
    spans: list[Span] = []
    for line_start, line_end in _logical_lines(text, start, end):
        bullet = _BULLET.match(text, line_start, line_end)
        cursor = bullet.end() if bullet else line_start
        for match in _SENTENCE_END.finditer(text, cursor, line_end):
            if _is_boundary(text, match, line_end):
                piece = _trim(text, cursor, match.start(3))
                if piece:
                    spans.append(piece)
                cursor = match.end()
        piece = _trim(text, cursor, line_end)
        if piece:
            spans.append(piece)
    return spans


def _logical_lines(text: str, start: int, end: int) -> Iterator[Span]:
    """Split a paragraph only where a new list item begins, so hard-wrapped prose stays whole."""
    cursor = start
    for match in re.finditer("\n", text[start:end]):
        nxt = start + match.end()
        if _BULLET.match(text, nxt, end):
            yield cursor, start + match.start()
            cursor = nxt
    yield cursor, end


def _is_boundary(text: str, match: re.Match[str], limit: int) -> bool:
    after = match.end()
    if after >= limit:
        return True
    if "\n" not in match.group(3) and not _NEXT_STARTS_SENTENCE.match(text, after):
        return False
    if match.group(1) != ".":
        return True
    word_start = match.start(1)
    while word_start > 0 and (text[word_start - 1].isalnum() or text[word_start - 1] == "."):
        word_start -= 1
    word = text[word_start : match.start(1)].lower()
    if word in _ABBREVIATIONS:
        return False
    # Initials ("J. Smith") and single letters are not sentence ends.
    return not (len(word) == 1 and word.isalpha())

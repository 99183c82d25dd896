"""Cleaning and splitting: choose which spans of a document become chunks, never edit them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from service.ingest import markup
from service.ingest.corpus import Document

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


# Lines of scraped pages are untrusted and unbounded, so the noise and heading patterns below
# are scanned by hand in one pass: the regexes they replace backtracked for minutes on a long
# run of spaces or dots. What is left as regexes has no two neighbouring quantifiers over the
# same characters.
_CSS_VALUE_MAX = 80
_CSS_SELECTOR_PUNCT = frozenset(".#:>,*[]=\"'-")
# `[a-z]` under re.IGNORECASE also took these four; kept so results stay the same.
_CSS_NAME_EXTRA = frozenset("\u0130\u0131\u017f\u212a")
_TAG_MAX = 300
_CRUMB_SEPARATORS = re.compile(r"\s(?:>|›|»|/|\|)\s")
_SETEXT = re.compile(r"^\s{0,3}(?:=+|-+)\s*$")
# A sentence that opens by referring back ("They ...", "This ...") to what came before it.
REFERS_BACK = re.compile(r"(?:they|this|these|that|those|it|its|their|such|he|she|his|her)\b",
                         re.IGNORECASE)
_BULLET = re.compile(r"\s*(?:[•·▪‣◦*+\-–—]|\d{1,3}[.)])\s+")
# Only from the start of a run of marks: a long run without a space after it would otherwise
# be retried from each of its characters.
_SENTENCE_END = re.compile(r"(?<![.!?…])([.!?…]+)([\"'”’)\]]*)(\s+)")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs e.g i.e eg ie inc ltd co corp no fig figs al approx ca cf "
    "eq vol pp ph.d u.s u.k a.m p.m dept est govt jan feb mar apr jun jul aug sep sept oct "
    "nov dec".split()
)
_NEXT_STARTS_SENTENCE = re.compile(r"[\"'“‘(\[]?[A-Z0-9•¿¡]|[^\x00-\x7f]")


def _skip_spaces(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _is_css_name_char(ch: str) -> bool:
    return ("a" <= ch <= "z") or ("A" <= ch <= "Z") or ch == "-" or ch in _CSS_NAME_EXTRA


def _css_declaration(line: str, i: int) -> int | None:
    """End of one `name: value;` (and the space after it) starting at i, or None."""
    j = i
    while j < len(line) and _is_css_name_char(line[j]):
        j += 1
    if j == i:
        return None
    colon = _skip_spaces(line, j)
    if colon >= len(line) or line[colon] != ":":
        return None
    value = _skip_spaces(line, colon + 1)
    end = value
    while end < len(line) and line[end] not in ";{}\n":
        end += 1
    if end >= len(line) or line[end] != ";" or end - value > _CSS_VALUE_MAX:
        return None
    # An empty value may borrow one character of the space before it.
    if end == value and (value == colon + 1 or line[value - 1] == "\n"):
        return None
    return _skip_spaces(line, end + 1)


def _css_declarations(line: str, i: int) -> int | None:
    """End of two or more declarations from i, with an optional closing brace, or None."""
    count = 0
    while (following := _css_declaration(line, i)) is not None:
        i, count = following, count + 1
    if count < 2:
        return None
    return i + 1 if i < len(line) and line[i] == "}" else i


def _css_run_end(line: str) -> int | None:
    """End of a run of CSS declarations at the start of the line, optionally behind a class or
    id selector and a brace, e.g. the scraped ".css-uphcpbposition:absolute;left:0;top:-87px;"
    glued in front of a heading; None when the line does not start with one."""
    start = _skip_spaces(line, 0)
    if start < len(line) and line[start] in ".#":
        word_end = start + 1
        while word_end < len(line) and (_is_word_char(line[word_end]) or line[word_end] == "-"):
            word_end += 1
        # The selector may run into the first property name (".css-xyzposition:absolute;").
        if word_end - start >= 3 and _is_css_name_char(line[word_end - 1]):
            end = _css_declarations(line, word_end - 1)
            if end is not None:
                return end
        if word_end > start + 1 and word_end < len(line) and line[word_end] == "{":
            return _css_declarations(line, _skip_spaces(line, word_end + 1))
        return None
    if start < len(line) and line[start] == "{":
        return _css_declarations(line, _skip_spaces(line, start + 1))
    return _css_declarations(line, start)


def _is_css_rule(line: str) -> bool:
    """A line of a style sheet: `selector { declarations }` (either brace may be missing from
    this line), or a lone closing brace."""
    stripped = line.strip()
    if stripped == "}":
        return True
    start = _skip_spaces(line, 0)
    brace = line.find("{", start)
    if brace < 0:
        return False
    selector = line[start + 1 : brace] if line[start : start + 1] == "@" else line[start:brace]
    if not all(_is_word_char(ch) or ch.isspace() or ch in _CSS_SELECTOR_PUNCT
               for ch in selector):
        return False
    close = line.find("}", brace + 1)
    return close < 0 or not line[close + 1 :].strip()


def _is_tag_only(line: str) -> bool:
    """Markup left on a line of its own, e.g. `<div class="x"> <span>`."""
    i = _skip_spaces(line, 0)
    tags = 0
    while i < len(line):
        if line[i] != "<":
            return False
        close = i + 1
        while close < len(line) and line[close] not in "<>\n":
            close += 1
        if close >= len(line) or line[close] != ">" or not 1 <= close - i - 1 <= _TAG_MAX:
            return False
        tags += 1
        i = _skip_spaces(line, close + 1)
    return tags > 0


def _md_heading(line: str) -> str | None:
    """The text of a Markdown `#` heading line ("## Pay ##" -> "Pay"), or None."""
    hashes = _skip_spaces(line, 0)
    if hashes > 3:
        return None
    after = hashes
    while after < len(line) and line[after] == "#":
        after += 1
    if not 1 <= after - hashes <= 6:
        return None
    body = _skip_spaces(line, after)
    if body == after:
        return None
    # Closing hashes and the spaces around them are not part of the heading.
    tail = len(line)
    for in_run in (str.isspace, lambda ch: ch == "#", str.isspace):
        while tail > 0 and in_run(line[tail - 1]):
            tail -= 1
    if body < len(line):
        text = line[body : max(tail, body + 1)]
        return None if "\n" in text else text
    # Nothing but spaces after the hashes: the last one that is not a line break, keeping one
    # space before it.
    for i in range(body - 1, after, -1):
        if line[i] != "\n":
            return line[i]
    return None


def split(doc: Document, max_chars: int = 700, view: str | None = None) -> list[Chunk]:
    """Chunks along section, paragraph and sentence boundaries, each at most `max_chars` long.
    `view` is the document's visible view when the caller has made it already."""
    max_chars = min(max_chars, HARD_MAX_CHARS)
    # Markdown is read through its visible view (same offsets, markup blanked), so markup
    # never decides a boundary, a heading or a sentence; tables are found in the raw text.
    view = markup.view_of(doc.id, doc.text) if view is None else view
    tables = markup.is_markdown(doc.id)
    chunks: list[Chunk] = []
    marked = frozenset(start for start, _ in doc.headings)
    for heading, paragraphs in _sections(view, doc.text if tables else None, marked):
        pending: list[Span] = []
        for paragraph in paragraphs:
            sentences = [
                piece
                for sentence in split_sentences(view, *paragraph,
                                                raw=doc.text if tables else None)
                for piece in _cap(view, sentence, max_chars)
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


def _sections(text: str, raw: str | None = None,
              marked: frozenset[int] = frozenset()) -> Iterator[tuple[str, list[Span]]]:
    """(heading, paragraph spans) per section; noise lines and headings never enter paragraphs.
    With `raw` (the Markdown behind the view `text`), a table's delimiter row, blank in the
    view, keeps the header row and the body rows in one paragraph. Lines starting at a
    `marked` offset are headings because the original says so."""
    heading = ""
    paragraphs: list[Span] = []
    current: Span | None = None
    lines = list(_lines(text))
    for i, (start, end) in enumerate(lines):
        line = text[start:end]
        if raw is not None and current and markup.is_table_rule(raw[start:end]):
            continue
        following = text[lines[i + 1][0] : lines[i + 1][1]] if i + 1 < len(lines) else ""
        if start in marked:
            kind, content = "heading", 0
        elif raw is not None and line.strip() and markup.is_table_row(raw[start:end]):
            # A table row is always text: a header row alone above its rule is not a heading.
            kind, content = "text", len(line) - len(line.lstrip())
        else:
            # Markdown marks its headings (`#`, setext), and so do the readers of structured
            # formats (styles, font sizes, tags): a short lone line there is text. Only text
            # that marks none has its headings guessed.
            kind, content = classify_line(line, following, lone=raw is None and not marked
                                          and _is_lone(text, lines, i))
        if kind == "text":
            content_start = start + content
            current = (current[0], end) if current else (content_start, end)
            continue
        # A setext underline counts only right under its text; after a blank line, `---`
        # is a thematic break and the paragraph above stays text.
        underlines = current is not None
        if current:
            paragraphs.append(current)
            current = None
        if kind == "heading":
            if paragraphs:
                yield heading, paragraphs
                paragraphs = []
            heading = _heading_text(line[content:])
        elif kind == "underline" and underlines and paragraphs:
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
    text = _md_heading(raw)
    return " ".join((raw if text is None else text).split())


def classify_line(line: str, following: str = "", *, lone: bool = True) -> tuple[str, int]:
    """Kind of one line ('blank', 'noise', 'heading', 'underline', 'text') and where its
    content starts (past any glued-on CSS)."""
    if not line.strip():
        return "blank", 0
    if _SETEXT.match(line) and len(line.strip()) >= 3:
        return "underline", 0
    if _is_css_rule(line) or _is_tag_only(line):
        return "noise", 0
    offset = _css_run_end(line) or 0
    if offset and not line[offset:].strip():
        return "noise", 0
    rest = line[offset:]
    if _md_heading(rest) is not None:
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


def split_sentences(text: str, start: int, end: int, raw: str | None = None) -> list[Span]:
    """Sentence spans inside text[start:end]; list markers and edge whitespace excluded. With
    `raw` (the Markdown behind the view `text`), each table row is a sentence of its own."""
    spans: list[Span] = []
    for line_start, line_end in _logical_lines(text, start, end, raw):
        if raw is not None and markup.is_table_row(raw[line_start:line_end]):
            piece = _trim(text, line_start, line_end)
            if piece:
                spans.append(piece)
            continue
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


def _logical_lines(text: str, start: int, end: int, raw: str | None = None) -> Iterator[Span]:
    """Split a paragraph only where a new list item or table row begins, so hard-wrapped prose
    stays whole."""
    cursor = start
    for match in re.finditer("\n", text[start:end]):
        nxt = start + match.end()
        here = start + match.start()
        if _BULLET.match(text, nxt, end) or (raw is not None and (
                markup.is_table_row(raw[cursor:here])
                or markup.is_table_row(raw[nxt:_line_end(raw, nxt, end)]))):
            if here > cursor:
                yield cursor, here
            cursor = nxt
    yield cursor, end


def _line_end(text: str, start: int, limit: int) -> int:
    end = text.find("\n", start, limit)
    return limit if end < 0 else end


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

"""PDF (.pdf): each page's text in reading order, paragraphs and headings found from the
line layout, running headers and footers dropped, words split by line-end hyphens rejoined."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import pypdfium2 as pdfium

from service.ingest.document import Extraction, ReadError, TextBuilder

# pdfium marks a hyphen it found at a line end (a word split across lines) with one of these
# and joins the lines itself; some writers instead end the line with a typographic or soft
# hyphen (a hard hyphen, "-", ends a line at a compound, and stays).
_SPLIT_HYPHENS = "\ufffe\x02"
_BREAK_HYPHENS = "\u2010\u00ad"
_DIGITS = re.compile(r"\d+")
# Baseline-to-baseline distance, in units of the line's font height, beyond which the next
# line starts a new paragraph (body text is set at about 1.2-1.5).
_PARAGRAPH_PITCH = 1.6
# A line this much taller than the page's body text is a heading.
_HEADING_SIZE = 1.15
# A first or last line that recurs (digits aside) on this share of pages is a running
# header or footer; so is one set smaller than the body text in the page's outer margin
# (this share of its height), which catches them in documents of one or two pages too.
_RUNNING_SHARE = 0.5
_MARGIN_SHARE = 0.08
_MARGIN_SIZE = 0.85


@dataclass
class _Line:
    text: str
    bottom: float
    height: float
    in_margin: bool = False


def read(data: bytes, name: str) -> Extraction:
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise ReadError("encrypted PDF: it needs a password, which is not supported") from None
        raise ReadError(f"not a readable PDF ({exc})") from None
    try:
        pages = [_page_lines(pdf, i) for i in range(len(pdf))]
        title = str(pdf.get_metadata_value("Title") or "").strip()
    finally:
        pdf.close()
    if not any(line.text.strip() for page in pages for line in page):
        raise ReadError("no text layer: OCR is not supported (a scanned or image-only PDF)")
    running = _running_lines(pages)
    lines = [line for page in pages for line in page]
    body_height = _body_height([line for line in lines if not line.in_margin] or lines)
    out = TextBuilder()
    runs_on = False  # the last page ended inside a paragraph of body text
    for page in pages:
        kept = [line for i, line in enumerate(page)
                if not _is_running(running, page, i)
                and not (line.in_margin and (i < 2 or i >= len(page) - 2)
                         and line.height < _MARGIN_SIZE * body_height)]
        blocks = [(_join(paragraph), len(paragraph) <= 2 and body_height > 0
                   and min(line.height for line in paragraph) > body_height * _HEADING_SIZE)
                  for paragraph in _paragraphs(kept)]
        # A paragraph cut by the page break goes on at the top of the next page, in lower case.
        out.page(continued=runs_on and bool(blocks) and not blocks[0][1]
                 and blocks[0][0][:1].islower())
        for text, heading in blocks:
            out.block(text, heading=heading)
        runs_on = bool(blocks) and not blocks[-1][1] and _runs_on(blocks[-1][0])
    return [out.document(name, _meaningful(title, name), paged=True)], []


def _runs_on(text: str) -> bool:
    """True when the text stops mid-sentence (no closing punctuation at its end)."""
    end = text.rstrip().rstrip("\"'”’)]")
    return bool(end) and end[-1] not in ".!?:;"


def _body_height(lines: list[_Line]) -> float:
    """The height of most of the text: the median line height weighted by characters, so
    that many short lines in another font (code or table cells) do not set it. The caller
    leaves out lines in the page margins, where print headers and footers are."""
    total = sum(len(line.text) for line in lines if line.height > 0)
    seen = 0
    for line in sorted((line for line in lines if line.height > 0), key=lambda li: li.height):
        seen += len(line.text)
        if 2 * seen >= total:
            return line.height
    return 0.0


def _page_lines(pdf: pdfium.PdfDocument, i: int) -> list[_Line]:
    page = pdf[i]
    try:
        textpage = page.get_textpage()
        try:
            text = textpage.get_text_range()
            # The geometry below is looked up by character index; it lines up with the text
            # only when pdfium added or dropped no characters (otherwise: one line per line).
            aligned = len(text) == textpage.count_chars()
            height = page.get_height()
            margin = height * _MARGIN_SHARE
            lines: list[_Line] = []
            position = 0
            for raw in text.split("\r\n"):
                stripped = raw.strip()
                if stripped and aligned:
                    first = position + len(raw) - len(raw.lstrip())
                    _, bottom, _, top = textpage.get_charbox(first, loose=True)
                    lines.append(_Line(stripped, bottom, top - bottom,
                                       top > height - margin or bottom < margin))
                elif stripped:
                    lines.append(_Line(stripped, 0.0, 0.0))
                position += len(raw) + 2
            return lines
        finally:
            textpage.close()
    finally:
        page.close()


def _key(text: str) -> str:
    return _DIGITS.sub("#", " ".join(text.split()))


def _running_lines(pages: list[list[_Line]]) -> set[tuple[str, int, str]]:
    """Lines that recur at the same place from the top or bottom on most pages: page numbers,
    print dates, document titles in a header, URLs in a footer."""
    if len(pages) < 3:
        return set()
    counts: Counter[tuple[str, int, str]] = Counter()
    for page in pages:
        for depth in range(min(2, len(page))):
            counts[("top", depth, _key(page[depth].text))] += 1
            counts[("bottom", depth, _key(page[-1 - depth].text))] += 1
    needed = max(3.0, _RUNNING_SHARE * len(pages))
    return {place for place, n in counts.items() if n >= needed}


def _is_running(running: set[tuple[str, int, str]], page: list[_Line], i: int) -> bool:
    key = _key(page[i].text)
    from_bottom = len(page) - 1 - i
    return ((i < 2 and ("top", i, key) in running)
            or (from_bottom < 2 and ("bottom", from_bottom, key) in running))


def _paragraphs(lines: list[_Line]) -> list[list[_Line]]:
    groups: list[list[_Line]] = []
    for line in lines:
        if groups and not _breaks(groups[-1][-1], line):
            groups[-1].append(line)
        else:
            groups.append([line])
    return groups


def _breaks(before: _Line, line: _Line) -> bool:
    if before.height <= 0 or line.height <= 0:
        return False
    if abs(line.height - before.height) > 0.1 * max(line.height, before.height):
        return True
    pitch = before.bottom - line.bottom
    return pitch <= 0 or pitch > _PARAGRAPH_PITCH * max(line.height, before.height)


def _join(paragraph: list[_Line]) -> str:
    out = ""
    for line in paragraph:
        text = line.text
        if (out[-1:] and out[-1] in _BREAK_HYPHENS and out[-2:-1].isalpha()
                and text[:1].islower()):
            out = out[:-1] + _SPLIT_HYPHENS[0] + text
        else:
            out = f"{out}\n{text}" if out else text
    return _rejoin(out)


def _rejoin(text: str) -> str:
    """Drop the hyphen of a word split at a line end, but keep it inside an address, a path
    or a number, where the hyphen is more likely part of the text."""
    if not any(mark in text for mark in _SPLIT_HYPHENS):
        return text
    out = []
    for token in text.split(" "):
        keep = any(ch in token for ch in "@/") or any(ch.isdigit() for ch in token)
        for mark in _SPLIT_HYPHENS:
            token = token.replace(mark, "-" if keep else "")
        out.append(token)
    return " ".join(out)


def _meaningful(title: str, name: str) -> str:
    """The metadata title, unless it is empty or just a file or tool name."""
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    if len(title) < 3 or title.lower() in (stem.lower(), "untitled") or "." in title[-6:]:
        return ""
    return title

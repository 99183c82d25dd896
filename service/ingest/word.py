"""Word documents (.docx): paragraphs in order, headings by style, list items, table rows."""

from __future__ import annotations

import io

import docx
from docx.table import Table
from docx.text.paragraph import Paragraph

from service.ingest.document import Extraction, ReadError, TextBuilder, cell_text
from service.ingest.package import open_package

BULLET = "• "


def read(data: bytes, name: str) -> Extraction:
    open_package(data, "word/document.xml", "Word").close()
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises many kinds on a damaged package
        raise ReadError(f"not a readable Word file ({type(exc).__name__}: {exc})") from None
    out = TextBuilder()
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            _paragraph(out, block)
        else:
            _table(out, block)
    title = (document.core_properties.title or "").strip()
    return [out.document(name, title)], []


def _paragraph(out: TextBuilder, paragraph: Paragraph) -> None:
    text = paragraph.text
    style = (paragraph.style.name if paragraph.style is not None else "") or ""
    if style == "Title" or style.startswith("Heading"):
        out.block(text, heading=True)
        return
    numbered = paragraph._p.xpath("./w:pPr/w:numPr")
    if numbered or style.startswith("List"):
        levels = paragraph._p.xpath("./w:pPr/w:numPr/w:ilvl/@w:val")
        level = int(levels[0]) if levels and str(levels[0]).isdigit() else 0
        out.line("  " * min(level, 8) + BULLET + " ".join(text.split()))
        return
    out.block(text)


def _table(out: TextBuilder, table: Table) -> None:
    """One line per row, cells apart by tabs; the first row is the header."""
    out.end_run()
    for row in table.rows:
        cells = []
        previous = None
        for cell in row.cells:
            # A merged cell comes back once per grid column it spans.
            if previous is not None and cell._tc is previous:
                continue
            previous = cell._tc
            cells.append(cell_text(cell.text))
        if any(cells):
            out.line("\t".join(cells))
    out.end_run()

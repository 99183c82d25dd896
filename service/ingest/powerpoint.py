"""PowerPoint presentations (.pptx): one page per slide with its title, text, tables, notes."""

from __future__ import annotations

import io
from collections.abc import Iterable

from pptx import Presentation
from pptx.shapes.base import BaseShape
from pptx.shapes.group import GroupShape

from service.ingest.document import Extraction, ReadError, TextBuilder, cell_text
from service.ingest.package import open_package

BULLET = "• "


def read(data: bytes, name: str) -> Extraction:
    open_package(data, "ppt/presentation.xml", "PowerPoint").close()
    try:
        deck = Presentation(io.BytesIO(data))
    except Exception as exc:  # python-pptx raises many kinds on a damaged package
        raise ReadError(f"not a readable PowerPoint file ({type(exc).__name__}: {exc})") from None
    out = TextBuilder()
    for slide in deck.slides:
        out.page()
        title = slide.shapes.title
        if title is not None and title.has_text_frame:
            out.block(title.text_frame.text, heading=True)
        _shapes(out, (s for s in slide.shapes if title is None or s.shape_id != title.shape_id))
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            if notes:
                out.block("Notes: " + notes)
    title_text = (deck.core_properties.title or "").strip()
    return [out.document(name, title_text, paged=True)], []


def _shapes(out: TextBuilder, shapes: Iterable[BaseShape]) -> None:
    # Reading order on a slide is top to bottom, then left to right.
    for shape in sorted(shapes, key=lambda s: (s.top or 0, s.left or 0)):
        if isinstance(shape, GroupShape):
            _shapes(out, shape.shapes)
        elif getattr(shape, "has_table", False):
            out.end_run()
            for row in shape.table.rows:  # type: ignore[attr-defined]
                cells = [cell_text(cell.text) for cell in row.cells]
                if any(cells):
                    out.line("\t".join(cells))
            out.end_run()
        elif getattr(shape, "has_text_frame", False):
            paragraphs = [p for p in shape.text_frame.paragraphs  # type: ignore[attr-defined]
                          if "".join(r.text for r in p.runs).strip()]
            if len(paragraphs) == 1:
                out.block("".join(r.text for r in paragraphs[0].runs))
                continue
            out.end_run()
            for p in paragraphs:
                text = " ".join("".join(r.text for r in p.runs).split())
                out.line("  " * min(p.level, 8) + BULLET + text)
            out.end_run()

"""Markdown (.md): the decoded file is the document; its markup stays in the text."""

from __future__ import annotations

from service.ingest import markup
from service.ingest.document import Document, Extraction, first_line
from service.ingest.plain import decode


def read(data: bytes, name: str) -> Extraction:
    text = decode(data)
    title = markup.front_matter_title(text) or first_line(markup.visible(text))
    return [Document(name, title or name, text)], []

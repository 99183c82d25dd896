"""The Word reader on a page converted by pandoc, and on damaged or hostile packages."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from service.ingest import word
from service.ingest.document import ReadError
from service.ingest.package import MAX_PART_BYTES

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DOCX = FIXTURES / "work-schedules.docx"


def test_headings_lists_and_tables() -> None:
    docs, problems = word.read(DOCX.read_bytes(), "hr/work-schedules.docx")
    assert problems == []
    (doc,) = docs
    assert (doc.id, doc.title, doc.pages) == ("hr/work-schedules.docx", "Work schedules", ())
    headings = [doc.text[a:b] for a, b in doc.headings]
    assert headings[:3] == ["Work schedules", "A note before getting started", "Definitions"]
    assert "Variable Week" in headings
    # A list item per line, a table row per line with its cells apart by tabs.
    assert "\n• The maximum number of hours you can work in a single day is 12.\n" in doc.text
    assert "\n\nDay\tHours\nMonday\t10\nTuesday\t9\n" in doc.text


def _package(parts: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_bomb_is_refused_before_inflating() -> None:
    bomb = _package({"[Content_Types].xml": b"<Types/>",
                     "word/document.xml": b"<" + b" " * (MAX_PART_BYTES + 1)})
    assert len(bomb) < MAX_PART_BYTES // 100
    with pytest.raises(ReadError, match="a zip bomb"):
        word.read(bomb, "bomb.docx")


def test_a_damaged_package_is_a_read_error() -> None:
    with pytest.raises(ReadError, match="damaged ZIP package"):
        word.read(DOCX.read_bytes()[:4000], "cut.docx")
    with pytest.raises(ReadError, match="no word/document.xml"):
        word.read(_package({"other.xml": b"<x/>"}), "other.docx")
    with pytest.raises(ReadError, match="not a readable Word file"):
        word.read(_package({"word/document.xml": b"<not xml"}), "broken.docx")

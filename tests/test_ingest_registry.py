"""The format table: every reader by suffix, content that contradicts the suffix refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.ingest.registry import FORMATS, SUFFIXES, format_for, mismatch, sniff

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_suffixes_map_to_one_format_each() -> None:
    assert SUFFIXES == (".txt", ".md", ".html", ".htm", ".jsonl", ".pdf", ".docx", ".pptx")
    assert format_for("a/B.PDF") is format_for("x.pdf")
    assert format_for("notes.doc") is None and format_for("README") is None
    assert len({f.name for f in FORMATS}) == len(FORMATS)


@pytest.mark.parametrize(("name", "kind"), [
    ("fmla.pdf", "pdf"), ("work-schedules.docx", "docx"), ("advanced-sick-leave.pptx", "pptx"),
    ("make_fixtures.sh", "text")])
def test_sniffing_real_files(name: str, kind: str) -> None:
    assert sniff((FIXTURES / name).read_bytes()) == kind


def test_content_that_is_not_what_the_suffix_says() -> None:
    docx = (FIXTURES / "work-schedules.docx").read_bytes()
    pdf = format_for("x.pdf")
    assert pdf is not None
    assert mismatch(pdf, docx) == "not a PDF file: its content looks like a Word document"
    assert mismatch(pdf, b"<html>hello</html>") == "not a PDF file: its content looks like text"
    pptx = format_for("x.pptx")
    assert pptx is not None and mismatch(pptx, docx) == (
        "not a PowerPoint presentation file: its content looks like a Word document")
    # Text formats are checked by decoding them, as before.
    txt = format_for("x.txt")
    assert txt is not None and mismatch(txt, docx) is None

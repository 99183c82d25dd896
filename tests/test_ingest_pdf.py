"""The PDF reader on PDFs printed by Chromium, encrypted by qpdf and scanned via img2pdf."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.ingest import pdf
from service.ingest.chunking import split
from service.ingest.document import Extraction, ReadError

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _read(name: str) -> Extraction:
    return pdf.read((FIXTURES / name).read_bytes(), name)


def test_pages_title_and_headings_of_a_printed_page() -> None:
    docs, problems = _read("fmla.pdf")
    assert problems == []
    (doc,) = docs
    assert doc.id == "fmla.pdf"
    assert doc.title == "Family Medical Leave Act (FMLA)"
    assert len(doc.pages) == 3 and doc.pages[0] == 0
    assert list(doc.pages) == sorted(doc.pages) and doc.pages[-1] < len(doc.text)
    headings = [doc.text[a:b] for a, b in doc.headings]
    assert "About FMLA" in headings and "Eligibility" in headings
    assert "To be eligible for FMLA, you must have at least one year of federal\nservice." \
        in doc.text
    # A passage is cited to the page it starts on.
    assert doc.page_at(0) == 1 and doc.page_at(doc.pages[1] - 1) == 1
    assert doc.page_at(doc.pages[1]) == 2 and doc.page_at(len(doc.text)) == 3
    assert doc.page_at(doc.text.index("Questions?")) == 3


def test_running_headers_and_footers_are_dropped() -> None:
    doc = _read("fmla.pdf")[0][0]
    # Chromium prints the date and title on top of each page, the URL and "n/3" below.
    assert "file://" not in doc.text and "/3" not in doc.text
    assert doc.text.count("Family Medical Leave Act") == 1 + doc.text.count(
        "Family Medical Leave Act (FMLA) can")


def test_words_split_at_a_line_end_are_rejoined() -> None:
    doc = _read("hyphens.pdf")[0][0]
    assert "Administrative" in doc.text and "blood donation." in doc.text
    assert "advanced leave." in doc.text and "\u2010" not in doc.text
    # One page: the print header and footer are known by their small type in the margin.
    assert doc.text.endswith("Ask about advanced leave.\n") and "Hyphenation sample" not in doc.text


def test_a_hyphen_inside_an_address_stays() -> None:
    assert pdf._rejoin("mail kc\ufffepayroll@gsa.gov or ad\ufffevanced") == (
        "mail kc-payroll@gsa.gov or advanced")


@pytest.mark.parametrize(("name", "reason"), [
    ("encrypted.pdf", "encrypted PDF: it needs a password"),
    ("scanned.pdf", "no text layer: OCR is not supported"),
])
def test_unreadable_pdfs_say_why(name: str, reason: str) -> None:
    with pytest.raises(ReadError, match=reason):
        _read(name)


def test_a_truncated_pdf_is_a_read_error() -> None:
    data = (FIXTURES / "fmla.pdf").read_bytes()
    with pytest.raises(ReadError, match="not a readable PDF"):
        pdf.read(data[:1500], "cut.pdf")


def test_a_paragraph_cut_by_a_page_break_stays_one_paragraph() -> None:
    doc = _read("pagebreak.pdf")[0][0]
    assert len(doc.pages) == 2
    # The page ends mid-sentence ("...use the newly" / "accrued hours first..."): the next
    # page goes on on the next line, where page 2 starts, not after a blank line.
    assert "you must use the newly\naccrued hours first" in doc.text
    assert doc.text[doc.pages[1]:].startswith("accrued hours first")
    sentences = [doc.text[a:b] for chunk in split(doc) for a, b in chunk.sentences]
    assert any(s.startswith("If you return") and s.endswith("returned to the\ndonors.")
               for s in sentences), sentences
    # A paragraph that ends on its page still ends there.
    assert "donors.\n\nTell your supervisor" in doc.text


def test_body_text_is_not_a_heading_beside_many_lines_of_code() -> None:
    # Fourteen short lines of a code listing in a smaller font against five lines of prose:
    # the body size is that of most characters, not most lines, so the prose stays text.
    doc = _read("codelisting.pdf")[0][0]
    assert [doc.text[a:b] for a, b in doc.headings] == ["Updating your laptop"]
    assert "brew update\nbrew upgrade" in doc.text

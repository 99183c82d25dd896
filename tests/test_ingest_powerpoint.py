"""The PowerPoint reader on slides made by pandoc: a page per slide, titles, bullets, notes."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.ingest import powerpoint
from service.ingest.document import ReadError

PPTX = Path(__file__).resolve().parent / "fixtures" / "advanced-sick-leave.pptx"


def test_one_page_per_slide_with_titles_bullets_and_notes() -> None:
    docs, problems = powerpoint.read(PPTX.read_bytes(), "deck.pptx")
    assert problems == []
    (doc,) = docs
    assert doc.title == "Advanced sick leave"
    assert len(doc.pages) == 4
    starts = [doc.text[start:].split("\n", 1)[0] for start in doc.pages]
    # pandoc puts the page's first paragraphs on a slide without a title of its own.
    assert starts == ["Advanced sick leave", starts[1],
                      "Getting approval for advanced sick leave", "Resources"]
    assert starts[1].startswith("• You can request up to 240 hours")
    assert [doc.text[a:b] for a, b in doc.headings] == [starts[0], *starts[2:]]
    assert "\n• You can request up to 240 hours of advanced sick leave." in doc.text
    notes = doc.text.index("Notes: Remind people that advanced leave is paid back")
    assert doc.page_at(notes) == 4


def test_a_word_file_is_not_a_presentation() -> None:
    data = (PPTX.parent / "work-schedules.docx").read_bytes()
    with pytest.raises(ReadError, match="no ppt/presentation.xml"):
        powerpoint.read(data, "renamed.pptx")

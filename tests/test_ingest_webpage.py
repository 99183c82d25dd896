"""The web page reader on handbook pages that pandoc rendered inside an intranet's chrome
(eval/intranet.html), on pages without chrome, and on hostile markup."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from service.ingest import webpage
from service.ingest.document import ReadError
from service.ingest.registry import BY_NAME
from service.ingest.sandbox import ParseLimits, read_isolated

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FMLA = FIXTURES / "fmla-intranet.html"
DATES = FIXTURES / "dates-intranet.html"
# Text of the site template around every page: banner, header, menu, sidebar, footer.
CHROME = ["Accept all cookies", "Skip to main content", "Search the intranet",
          "People directory", "In this section", "Guide for new starters",
          "The service desk answers calls", "Was this page useful?",
          "Accessibility statement", "All rights reserved", "Staff intranet"]


def test_the_main_content_is_kept_and_the_site_chrome_dropped() -> None:
    data = FMLA.read_bytes()
    # The whole visible text (the reader before main-content extraction) has all the chrome.
    visible = webpage.html_to_text(data.decode("utf-8"))[1]
    assert all(phrase in visible for phrase in CHROME)
    docs, problems = webpage.read(data, "hr/fmla.html")
    assert problems == []
    (doc,) = docs
    assert [phrase for phrase in CHROME if phrase in doc.text] == []
    # The title is the page's <h1>, not the <title> with the site's name in it.
    assert (doc.id, doc.title, doc.pages) == ("hr/fmla.html", "Family Medical Leave Act (FMLA)",
                                              ())
    headings = [doc.text[a:b] for a, b in doc.headings]
    assert headings[:4] == ["Family Medical Leave Act (FMLA)", "About FMLA", "Eligibility",
                            "How FMLA works"]
    assert doc.text.startswith("Family Medical Leave Act (FMLA)\n\nIf you have a serious")
    # Paragraphs on one line whatever the source's wrapping; list items as bullet lines.
    assert ("\n\nYou can take up to 26 weeks of unpaid FMLA to care for an ill servicemember "
            "or veteran, if you are their spouse, child, parent, or next of kin.\n\n") in doc.text
    assert "\n• The birth or care of a child\n• An adoption or foster care" in doc.text


def test_tables_are_rows_of_cells() -> None:
    (doc,), _ = webpage.read(DATES.read_bytes(), "dates.html")
    assert doc.title == "Performance Management Important Dates"
    assert "\n\nDate\tItem\nOctober 1, 2024\tFY25 performance cycle begins\n" in doc.text
    assert "Accept all cookies" not in doc.text


def test_a_page_that_is_all_content_is_read_whole() -> None:
    (doc,), _ = webpage.read(b"<title>T</title><p>Hello <b>world</b>.</p><script>x()</script>",
                             "p.html")
    assert (doc.title, doc.text) == ("T", "Hello world.\n")


def test_nested_lists_are_indented_under_their_item() -> None:
    items = "".join(f"<li>Point number {i} of the procedure explained in a full sentence.</li>"
                    for i in range(6))
    markup = (f"<html><body><nav><a href='/'>Home</a></nav><main><h1>Procedure</h1><ul>"
              f"<li>Outer item with words<ul><li>Inner item with words</li></ul></li>{items}"
              f"</ul></main></body></html>")
    (doc,), _ = webpage.read(markup.encode(), "p.html")
    assert "\n• Outer item with words\n  • Inner item with words\n• Point number 0" in doc.text


def test_an_empty_page_is_a_read_error() -> None:
    with pytest.raises(ReadError, match="no visible text"):
        webpage.read(b"<html><head><title>T</title></head><body> </body></html>", "e.html")


def test_web_pages_are_read_in_worker_processes() -> None:
    assert BY_NAME["html"].isolated
    docs, problems = read_isolated(webpage.read, "html", FMLA.read_bytes(), "f.html",
                                   ParseLimits(timeout=60))
    assert problems == [] and docs[0].title == "Family Medical Leave Act (FMLA)"


@pytest.mark.parametrize("markup", [
    "</" * 100_000, "<!" * 100_000, "<" * 200_000, "<a " + "b=c " * 50_000,
    "<p>Text</p>" + "</" * 100_000, "<!--" + "<a>" * 30_000, "<div>" * 100_000 + "x",
    "<b>" * 100_000 + "x" + "</b>" * 100_000, "<p>x" * 200_000,
    # Just under the tag limit, so main-content extraction runs on the most elements it takes.
    "<p>x" * (webpage.MAX_TAGS - 10), "<table>" + "<tr><td>x" * (webpage.MAX_TAGS // 2 - 10),
    "<html><body>" + "<div><p>word word word.</p></div>" * (webpage.MAX_TAGS // 4 - 10),
], ids=range(12))
def test_hostile_markup_is_read_in_bounded_time(
        markup: str, within: Callable[[float], AbstractContextManager[None]]) -> None:
    with within(20.0):
        try:
            webpage.read(markup.encode(), "h.html")
        except ReadError:
            pass

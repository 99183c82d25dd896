"""The visible view of Markdown: markup blanked, offsets kept, titles and table headers read."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from service.ingest import markup

PAGE = """---
title: "Leave types"
keywords: vacation, leave
---

{% alert %}
Use this <a href="https://example.org/x">leave chart</a>.
{% endalert %}

## Reasons

For **general uses and vacation**, see [Annual Leave]({% page "/leave/" %}) or `snake_case_name`.
{% comment %}Hidden note{% endcomment %}<!-- hidden too -->

| Level | Award |
| ----- | ----- |
| Level 4 | Up to 2.1% of pay |
"""


def test_the_view_keeps_every_offset_and_newline() -> None:
    view = markup.visible(PAGE)
    assert len(view) == len(PAGE)
    assert [i for i, c in enumerate(view) if c == "\n"] == [
        i for i, c in enumerate(PAGE) if c == "\n"]
    # Whatever is visible is the text itself, never rewritten.
    assert all(v == " " or v == t for v, t in zip(view, PAGE, strict=True))


def test_markup_never_reaches_the_view() -> None:
    view = " ".join(markup.visible(PAGE).split())
    for gone in ("title:", "keywords", "{%", "%}", "<a", "href", "https://", "**", "](",
                 "Hidden note", "hidden too", "`", "-----", "|"):
        assert gone not in view, gone
    for kept in ("Use this leave chart .", "For general uses and vacation ,",
                 "Annual Leave", "snake_case_name", "Level 4 Up to 2.1% of pay", "## Reasons"):
        assert kept in view, kept


def test_title_comes_from_front_matter() -> None:
    assert markup.front_matter_title(PAGE) == "Leave types"
    assert markup.front_matter_title("# Heading\n\ntext") == ""
    assert markup.front_matter_end("---\nnot closed\n") == 0


def test_emphasis_is_told_from_arithmetic_and_identifiers() -> None:
    assert markup.visible("2 * 3 and a_b and ~5 days") == "2 * 3 and a_b and ~5 days"
    assert markup.visible("*a* _b_ ~~c~~") == " a   b    c  "


def test_a_table_row_finds_its_header() -> None:
    view = markup.visible(PAGE)
    row = PAGE.index("| Level 4")
    assert markup.table_header(PAGE, view, row) == ["Level", "Award"]
    end = PAGE.index("\n", row)
    assert markup.row_cells(PAGE, view, row, end) == ["Level 4", "Up to 2.1% of pay"]
    prose = PAGE.index("For **general")
    assert markup.table_header(PAGE, view, prose) == []


@given(st.text(alphabet="ab *_~`[]()<>{}%|#-:!\\\n", max_size=300))
def test_any_input_keeps_its_length(text: str) -> None:
    assert len(markup.visible(text)) == len(text)


def test_hostile_input_is_read_in_linear_time() -> None:
    worst = ["{%" * 50_000, "<a" * 50_000, "](" * 50_000, "[" * 100_000, "*" * 100_000,
             "|" * 100_000, ("| a " * 20 + "\n") * 2_000, "---\n" + "x: y\n" * 20_000,
             "{% comment %}" * 10_000, "<!--" * 25_000, "(" * 100_000]
    for text in worst:
        started = time.perf_counter()
        markup.visible(text)
        markup.front_matter_title(text)
        assert time.perf_counter() - started < 2.0, text[:20]

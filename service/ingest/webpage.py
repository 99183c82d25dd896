"""Web pages (.html, .htm): the page's main content, without the site's navigation, header,
footer, cookie banner or sidebar; headings from the page's own heading tags."""

from __future__ import annotations

import logging
from html.parser import HTMLParser

from lxml.etree import _Element
from trafilatura import bare_extraction
from trafilatura.utils import load_html

from service.ingest.document import (
    Document,
    Extraction,
    ReadError,
    TextBuilder,
    cell_text,
    first_line,
)
from service.ingest.plain import decode

log = logging.getLogger(__name__)

BULLET = "• "
# Past this many "<" a page is read whole: trafilatura's cost per element is high (about
# 0.1 ms, and some of its passes grow faster than the page), and a page this big is most
# likely a long document of its own rather than one wrapped in site chrome.
MAX_TAGS = 20_000
# trafilatura's output elements (its XML body) that hold other blocks, not text of their own.
_CONTAINERS = frozenset(("div", "quote", "section", "article"))
_INLINE = frozenset(("lb", "hi", "ref"))  # line breaks, emphasis, links: part of a block's text


def read(data: bytes, name: str) -> Extraction:
    """The main content as trafilatura finds it. A page where it finds none (a short page, a
    page that is all content) is read whole, as the visible text."""
    markup = decode(data)
    title, visible = html_to_text(markup)
    if not visible.strip():
        raise ReadError("no visible text in the HTML")
    main = _main_content(markup, visible)
    if main is not None:
        main_title, builder = main
        return [builder.document(name, main_title or title)], []
    return [Document(name, title or first_line(visible) or name, visible)], []


def _main_content(markup: str, visible: str) -> tuple[str, TextBuilder] | None:
    """(title, laid-out text) of the main content, or None when trafilatura finds none or
    finds the whole page (then the visible text reads better: trafilatura's last resort
    puts every text node on a line of its own)."""
    if markup.count("<") > MAX_TAGS:
        return None
    tree = load_html(markup)
    if tree is None:
        return None
    found = bare_extraction(
        tree, fast=True, include_comments=False, include_tables=True, include_images=False,
        include_formatting=False, include_links=False, with_metadata=False, deduplicate=False)
    body = getattr(found, "body", None)
    if body is None:
        return None
    words = "".join(body.itertext()).split()
    if not words or len(words) >= len(visible.split()):
        return None
    out = TextBuilder()
    _blocks(out, body)
    return _main_title(body), out


def _main_title(body: _Element) -> str:
    """The first <h1> of the main content: a <title> often carries the site's name too."""
    for head in body.iter("head"):
        if head.get("rend") == "h1":
            return _inline(head)
    return ""


def _inline(element: _Element) -> str:
    return " ".join("".join(element.itertext()).split())


def _blocks(out: TextBuilder, element: _Element) -> None:
    """Lay out the children of a trafilatura body (or container) in document order."""
    if element.text and element.text.strip():
        out.block(" ".join(element.text.split()))
    for child in element:
        tag = child.tag if isinstance(child.tag, str) else ""
        if tag == "head":
            out.block(_inline(child), heading=True)
        elif tag == "list":
            _list(out, child)
        elif tag == "table":
            _table(out, child)
        elif tag == "code":
            out.block("".join(child.itertext()).strip("\n"))
        elif tag in _CONTAINERS and any(isinstance(c.tag, str) and c.tag not in _INLINE
                                        for c in child):
            _blocks(out, child)
        elif tag and tag != "graphic":
            out.block(_inline(child))
        if child.tail and child.tail.strip():
            out.block(" ".join(child.tail.split()))


def _list(out: TextBuilder, element: _Element) -> None:
    out.end_run()
    for line in _list_lines(element, 0):
        out.line(line)
    out.end_run()


def _list_lines(element: _Element, level: int) -> list[str]:
    """`• item` lines, nested lists indented under their item."""
    lines: list[str] = []
    for item in element:
        if item.tag != "item":
            continue
        own = [item.text or ""]
        nested = []
        for part in item:
            if part.tag == "list":
                nested.append(part)
            else:
                own.append("".join(part.itertext()))
            own.append(part.tail or "")
        text = " ".join("".join(own).split())
        if text:
            lines.append("  " * min(level, 8) + BULLET + text)
        for sub in nested:
            lines.extend(_list_lines(sub, level + 1))
    return lines


def _table(out: TextBuilder, element: _Element) -> None:
    """One line per row, cells apart by tabs, as the Word reader lays tables out."""
    out.end_run()
    for row in element.iter("row"):
        cells = [cell_text("".join(cell.itertext())) for cell in row if cell.tag == "cell"]
        if any(cells):
            out.line("\t".join(cells))
    out.end_run()


# Today's reader of the whole visible text: the fallback when no main content is found.

_BLOCK_TAGS = frozenset(
    "address article aside blockquote br dd details div dl dt fieldset figcaption figure footer "
    "form h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section summary table td th tr "
    "ul".split()
)
_HIDDEN_TAGS = frozenset("script style noscript template head svg iframe object canvas".split())


class _VisibleText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self.hidden = 0
        self.in_title = False
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        elif tag in _HIDDEN_TAGS:
            self.hidden += 1
        elif tag == "pre":
            self.pre += 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n\n" if tag.startswith("h") or tag in ("p", "li", "tr") else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in _HIDDEN_TAGS:
            self.hidden = max(0, self.hidden - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title_parts.append(data)
        elif not self.hidden:
            self.parts.append(data if self.pre else _squash(data))


def _squash(data: str) -> str:
    # Keep one space at either edge so inline tags do not glue words together.
    core = " ".join(data.split())
    if not core:
        return " " if data else ""
    lead = " " if data[:1].isspace() else ""
    trail = " " if data[-1:].isspace() else ""
    return f"{lead}{core}{trail}"


def html_to_text(markup: str) -> tuple[str, str]:
    """Visible text of an HTML page (blocks on their own lines) and its <title>."""
    parser = _VisibleText()
    # Python's HTMLParser rescans to the end of the input for every "<" it cannot close, which
    # is quadratic when nothing after it closes: "</" * 100_000 took 26 s. Past the last ">"
    # no tag can close anyway and the parser shows such text as it is, so escape it up front.
    tail = markup.rfind(">") + 1
    if "<" in markup[tail:]:
        markup = markup[:tail] + markup[tail:].replace("&", "&amp;").replace("<", "&lt;")
    parser.feed(markup)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    text = "\n".join(out).strip("\n") + "\n"
    return " ".join("".join(parser.title_parts).split()), text

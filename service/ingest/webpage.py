"""Web pages (.html, .htm): the visible text, blocks on their own lines, and the <title>."""

from __future__ import annotations

from html.parser import HTMLParser

from service.ingest.document import Document, Extraction, ReadError, first_line
from service.ingest.plain import decode


def read(data: bytes, name: str) -> Extraction:
    title, visible = html_to_text(decode(data))
    if not visible.strip():
        raise ReadError("no visible text in the HTML")
    return [Document(name, title or first_line(visible) or name, visible)], []


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

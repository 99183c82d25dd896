"""What a reader sees of a Markdown file: markup blanked out, every offset kept.

`visible(text)` returns a string of the same length as `text` in which front matter, Liquid and
HTML tags, comments, link targets, emphasis, code and table markers are replaced by spaces
(newlines stay). Chunking, the model, BM25 and the answer sentence read this view; citations
still point into the verbatim text, since every offset means the same in both. Table rows are
made readable for the model with `table_header` (the header row the model sees before a row).

Every scan is a single left-to-right pass with `str.find`: linear in the input, whatever it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# A tag that spans more than this is not a tag: what follows is shown as text.
MAX_TAG = 2_000
MAX_LINK_TARGET = 2_000
_COMMENT_BLOCKS = (("{% comment %}", "{% endcomment %}"), ("<!--", "-->"))
_EMPHASIS = "*_~"
_HTML_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ/!")


def is_markdown(doc_id: str) -> bool:
    return doc_id.lower().endswith((".md", ".markdown"))


def view_of(doc_id: str, text: str) -> str:
    """What readers see of a document: the visible view for Markdown, the text otherwise."""
    return visible(text) if is_markdown(doc_id) else text


def front_matter_end(text: str) -> int:
    """Where a YAML front matter block (`---` ... `---` at the very top) ends; 0 if none."""
    if not text.startswith("---"):
        return 0
    first = text.find("\n")
    if first < 0 or text[3:first].strip():
        return 0
    cursor = first + 1
    while cursor < len(text):
        end = text.find("\n", cursor)
        line_end = len(text) if end < 0 else end
        if text[cursor:line_end].rstrip() in ("---", "..."):
            return line_end
        if end < 0:
            break
        cursor = end + 1
    return 0


def front_matter_title(text: str) -> str:
    """The `title:` of the front matter, unquoted; '' if there is none."""
    end = front_matter_end(text)
    for line in text[:end].split("\n"):
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "title" and not line[:1].isspace():
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            return " ".join(value.split())[:200]
    return ""


def visible(text: str) -> str:
    """`text` with Markdown, Liquid and HTML markup replaced by spaces (same length)."""
    hidden = bytearray(len(text))
    for start, end in _hidden_spans(text):
        hidden[start:end] = b"\x01" * (end - start)
    pieces: list[str] = []
    cursor = 0
    for run in _RUNS.finditer(hidden):
        pieces.append(text[cursor : run.start()])
        pieces.append(_NOT_NEWLINE.sub(" ", text[run.start() : run.end()]))
        cursor = run.end()
    pieces.append(text[cursor:])
    return "".join(pieces)


_RUNS = re.compile(b"\x01+")
_NOT_NEWLINE = re.compile(r"[^\n]")


class _Next:
    """The next occurrence of `needle` at or after a position, found once per occurrence, so
    many openers without a closer cost one scan, not one scan each."""

    def __init__(self, text: str, needle: str) -> None:
        self.text, self.needle, self.at = text, needle, -1

    def after(self, position: int) -> int:
        if self.at != len(self.text) and self.at < position:
            found = self.text.find(self.needle, position)
            self.at = len(self.text) if found < 0 else found
        return -1 if self.at == len(self.text) else self.at


def _hidden_spans(text: str) -> Iterator[tuple[int, int]]:
    matter = front_matter_end(text)
    if matter:
        yield 0, matter
    yield from _blocks(text, matter)
    yield from _inline(text, matter)
    yield from _line_markers(text, matter)


def _blocks(text: str, start: int) -> Iterator[tuple[int, int]]:
    """Comments, whole: nothing in them is ever shown."""
    for opener, closer in _COMMENT_BLOCKS:
        cursor = start
        while True:
            begin = text.find(opener, cursor)
            if begin < 0:
                break
            end = text.find(closer, begin + len(opener))
            if end < 0:
                break
            yield begin, end + len(closer)
            cursor = end + len(closer)


def _inline(text: str, start: int) -> Iterator[tuple[int, int]]:
    """Tags, link targets, emphasis and code markers, in one pass."""
    i, n = start, len(text)
    ahead = {c: _Next(text, c) for c in ("%}", "}}", ">", "<", ")", "\n\n")}
    while i < n:
        c = text[i]
        if c == "{" and text.startswith(("{%", "{{"), i):
            closer = "%}" if text[i + 1] == "%" else "}}"
            end = ahead[closer].after(i + 2)
            if 0 <= end < i + MAX_TAG:
                yield i, end + 2
                i = end + 2
                continue
        elif c == "<" and i + 1 < n and text[i + 1] in _HTML_NAME_START:
            end = ahead[">"].after(i + 1)
            other = ahead["<"].after(i + 1)
            if 0 <= end < i + MAX_TAG and not 0 <= other < end:
                yield i, end + 1
                i = end + 1
                continue
        elif c == "]" and text.startswith("](", i):
            end = ahead[")"].after(i + 2)
            gap = ahead["\n\n"].after(i)
            if 0 <= end < i + MAX_LINK_TARGET and not 0 <= gap < end:
                yield i, end + 1
                i = end + 1
                continue
        elif c == "[" or (c == "!" and text.startswith("![", i)):
            yield i, i + (2 if c == "!" else 1)
        elif c == "`":
            yield i, i + 1
        elif c in _EMPHASIS:
            j = i
            while j < n and text[j] == c:
                j += 1
            if _is_emphasis(text, i, j):
                yield i, j
            i = j
            continue
        elif c == "\\" and i + 1 < n and not text[i + 1].isalnum() and not text[i + 1].isspace():
            yield i, i + 1
            i += 2
            continue
        i += 1


def _is_emphasis(text: str, start: int, end: int) -> bool:
    """Whether a run of * _ ~ marks emphasis: not between two spaces (`2 * 3`), not inside a
    word for `_` (snake_case), and `~` only doubled (a lone `~` means "about")."""
    before = text[start - 1] if start > 0 else " "
    after = text[end] if end < len(text) else " "
    if text[start] == "~" and end - start < 2:
        return False
    if before.isspace() and after.isspace():
        return False
    if before.isalnum() and after.isalnum():
        return text[start] == "*"
    return True


def _line_markers(text: str, start: int) -> Iterator[tuple[int, int]]:
    """Per line: quote markers, table pipes and delimiter rows."""
    cursor = start
    n = len(text)
    while cursor < n:
        end = text.find("\n", cursor)
        end = n if end < 0 else end
        line = text[cursor:end]
        stripped = line.lstrip()
        indent = cursor + len(line) - len(stripped)
        # Heading hashes and list bullets stay: the chunker reads them as structure and never
        # puts them inside a sentence.
        if stripped.startswith(">"):
            yield indent, indent + 1
        if is_table_rule(stripped):
            yield cursor, end
        elif is_table_row(stripped):
            offset = cursor
            while True:
                bar = text.find("|", offset, end)
                if bar < 0:
                    break
                if bar == 0 or text[bar - 1] != "\\":
                    yield bar, bar + 1
                offset = bar + 1
        cursor = end + 1


def line_bounds(text: str, offset: int) -> tuple[int, int]:
    """Start and end (before its newline) of the line holding `offset`."""
    end = text.find("\n", offset)
    return text.rfind("\n", 0, offset) + 1, len(text) if end < 0 else end


def is_table_rule(line: str) -> bool:
    """A table's delimiter row, such as `|---|:--:|` or `--- | ---`."""
    core = line.strip()
    return ("|" in core and "-" in core
            and not core.strip("|-: \t"))


def table_header(raw: str, view: str, line_start: int) -> list[str]:
    """For a table row starting at `line_start`, the visible cells of its table's header row
    ([] when the line is not under a delimiter row). `raw` is the text, `view` its visible view."""
    cursor = line_start
    # Walk up over the rows above, at most a long table's worth; the header sits on the rule.
    for _ in range(2_000):
        if cursor <= 0:
            return []
        prev_end = cursor - 1
        prev_start = raw.rfind("\n", 0, prev_end) + 1
        line = raw[prev_start:prev_end]
        if not line.strip():
            return []
        if is_table_rule(line):
            if prev_start <= 0:
                return []
            header_start = raw.rfind("\n", 0, prev_start - 1) + 1
            return row_cells(raw, view, header_start, prev_start - 1)
        cursor = prev_start
    return []


def row_cells(raw: str, view: str, start: int, end: int) -> list[str]:
    """The visible text of each cell of the table row raw[start:end]."""
    bars = [i for i in range(start, end) if raw[i] == "|" and raw[i - 1 : i] != "\\"]
    edges = [start, *[b for b in bars], end]
    cells = [" ".join(view[lo:hi].split()) for lo, hi in zip(edges, edges[1:], strict=False)]
    if cells and not cells[0] and raw[start:end].lstrip().startswith("|"):
        cells = cells[1:]
    if cells and not cells[-1] and raw[start:end].rstrip().endswith("|"):
        cells = cells[:-1]
    return cells


def is_table_row(line: str) -> bool:
    stripped = line.strip()
    return len(stripped) > 1 and (stripped.startswith("|") or stripped.endswith("|"))

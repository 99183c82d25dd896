"""How long the builder's parsers take on the worst files it accepts (QA_MAX_FILE_BYTES of
hostile lines): bounds the time one uploaded file can hold the build lock."""

from __future__ import annotations

import time

from service.ingest import webpage
from service.ingest.chunking import split
from service.ingest.corpus import Document, html_to_text

SIZE = 20_000_000  # the default QA_MAX_FILE_BYTES
LINES = ["{" + " " * 4000 + "}x", "# a" + " " * 2000 + "x", "." * 5000 + "x",
         ".css-" + "a" * 4000 + ":", "Mr" + ". Mr" * 1000 + ".", " " * 4000 + "x",
         "<a>" * 1000 + "x"]


def _timed(label: str, run: object) -> None:
    assert callable(run)
    started = time.perf_counter()
    out = run()
    print(f"{label}: {time.perf_counter() - started:.1f} s ({out})", flush=True)


def main() -> None:
    parts, size = [], 0
    while size < SIZE:
        line = LINES[len(parts) % len(LINES)]
        parts.append(line)
        size += len(line) + 1
    text = "\n".join(parts)
    _timed("split, 20 MB of the patterns' worst lines",
           lambda: f"{len(split(Document('w.txt', 't', text), 700)):,} chunks")
    words = "a " * (SIZE // 2)
    _timed("split, one 20 MB line of words",
           lambda: f"{len(split(Document('w.txt', 't', words), 700)):,} chunks")
    markup = "<p>x</p>" * (SIZE // 16) + "</" * (SIZE // 4)
    _timed("html_to_text, 10 MB of tags then 10 MB of unclosed '</'",
           lambda: f"{len(html_to_text(markup)[1]):,} characters of text")
    # The HTML reader: over webpage.MAX_TAGS the page is read whole, in linear time ...
    _timed("webpage.read, the same 20 MB",
           lambda: f"{len(webpage.read(markup.encode(), 'w.html')[0][0].text):,} characters")
    # ... and just under it, trafilatura's main-content extraction runs on the most it takes.
    under = "<p>x" * (webpage.MAX_TAGS - 10)
    _timed(f"webpage.read, {webpage.MAX_TAGS - 10:,} unclosed <p>",
           lambda: f"{len(webpage.read(under.encode(), 'w.html')[0][0].text):,} characters")


if __name__ == "__main__":
    main()

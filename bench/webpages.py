"""Reading intranet web pages: how much site chrome each HTML reader keeps, how much of the
page's own text, and how fast; optionally hit@3 over the whole handbook as web pages.

    .venv/bin/python bench/webpages.py [--pages N] [--quality [--baseline REF]]

Renders the first N TTS handbook pages (../shared, read only) with pandoc through
eval/intranet.html, a site template with a cookie banner, header, search, menu, breadcrumbs,
sidebar, page-feedback box and footer around the page. The same page rendered with an empty
body is that page's chrome; rendered with pandoc's plain template, its content. Word counts
then say what share of each a reader's text keeps (a multiset of words: a word counts as
chrome only beyond the times the content has it). Readers: today's visible-text parser
(before main-content extraction), trafilatura's own plain-text output, and ours (trafilatura's
structure laid out as a document, with the visible-text fallback), in-process and in worker
processes as builds run it. --quality also runs eval/formats.py --formats md,html (a build
and a served index of all 246 pages each) and prints its hit@3 lines; --baseline REF also
scores the web pages with the readers of git commit REF (its tree exported to a temporary
folder, run with this checkout's eval script and Python), e.g. the commit before the main-content
reader to see what the site chrome cost.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trafilatura  # noqa: E402

from eval.formats import HANDBOOK, INTRANET, pages, to_intranet_page  # noqa: E402
from service.ingest import webpage  # noqa: E402
from service.ingest.sandbox import ParseLimits, ReaderPool  # noqa: E402

PLAIN = "$if(title)$<h1>$title$</h1>$endif$\n$body$\n"


def render(sources: list[Path], root: Path) -> list[tuple[bytes, str, str]]:
    """(page with chrome, its chrome's text, its content's text) for each source."""
    chrome_template = root / "chrome.html"
    chrome_template.write_text(INTRANET.read_text("utf-8").replace("$body$", ""), "utf-8")
    plain_template = root / "plain.html"
    plain_template.write_text(PLAIN, "utf-8")
    out = []
    for i, md in enumerate(sources):
        page, chrome, content = (root / f"{i}-{kind}.html" for kind in ("page", "chrome", "body"))
        to_intranet_page(md, page)
        to_intranet_page(md, chrome, chrome_template)
        to_intranet_page(md, content, plain_template)
        out.append((page.read_bytes(), webpage.html_to_text(chrome.read_text("utf-8"))[1],
                    webpage.html_to_text(content.read_text("utf-8"))[1]))
    return out


def words(text: str) -> Counter[str]:
    # List bullets are layout, not words of either.
    return Counter(w.strip(".,:;!?()“”\"'’‘").lower() for w in text.split() if w != "•")


def shares(text: str, chrome: str, content: str) -> tuple[int, int, int, int]:
    """(chrome words kept, chrome words, content words kept, content words)."""
    got, want_chrome, want_content = words(text), words(chrome), words(content)
    content_kept = sum(min(got[w], n) for w, n in want_content.items())
    chrome_kept = sum(min(max(0, got[w] - want_content[w]), n) for w, n in want_chrome.items())
    return chrome_kept, sum(want_chrome.values()), content_kept, sum(want_content.values())


def today(data: bytes) -> str:
    return webpage.html_to_text(data.decode("utf-8"))[1]


def trafilatura_text(data: bytes) -> str:
    return trafilatura.extract(data.decode("utf-8"), include_comments=False,
                               include_tables=True) or ""


def ours(data: bytes) -> str:
    return webpage.read(data, "x.html")[0][0].text


def pooled(pool: ReaderPool) -> Callable[[bytes], str]:
    def run(data: bytes) -> str:
        docs, problems = pool.read(webpage.read, "html", data, "x.html")
        assert not problems, problems
        return docs[0].text
    return run


def quality(checkout: Path = ROOT, formats: str = "md,html") -> dict[str, str]:
    """hit@3 and the rest of check_http's summary for each format, built and served from
    `checkout` (which needs ../shared beside it)."""
    out = subprocess.run([sys.executable, str(checkout / "eval" / "formats.py"), "--formats",
                          formats], capture_output=True, text=True, check=True,
                         cwd=checkout).stdout
    lines = out.splitlines()
    summary = lines[lines.index("summary") + 1:]
    return {line.split()[0]: " ".join(line.split()[1:]) for line in summary if line.strip()}


def baseline_quality(ref: str) -> str:
    """The web pages' summary with the readers of commit `ref`."""
    with tempfile.TemporaryDirectory(prefix="qa-bench-html-base-") as tmp:
        checkout = Path(tmp) / "checkout"
        checkout.mkdir()
        (Path(tmp) / "shared").symlink_to(HANDBOOK.parent.parent.resolve())
        archive = subprocess.run(["git", "archive", ref], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(checkout)], input=archive, check=True)
        for name in ("formats.py", "intranet.html"):
            (checkout / "eval" / name).write_bytes((ROOT / "eval" / name).read_bytes())
        return quality(checkout, "html")["html"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Render the pages, print the figures and return them (`make bench` calls this with no
    arguments: the first 60 pages, no quality run)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=60)
    parser.add_argument("--quality", action="store_true")
    parser.add_argument("--baseline", help="git commit whose HTML reader to score too")
    args = parser.parse_args(argv or [])
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="qa-bench-html-") as tmp:
        sources = pages(args.pages)
        started = time.perf_counter()
        rendered = render(sources, Path(tmp))
        size = sum(len(r[0]) for r in rendered)
        print(f"{len(rendered)} pages rendered with pandoc through {INTRANET.name} in "
              f"{time.perf_counter() - started:.0f} s ({size:,} bytes)")
        pool = ReaderPool(ParseLimits())
        print("\nreader                      chrome kept   content kept   pages/s")
        for name, extract in (("today (visible text)", today),
                              ("trafilatura extract()", trafilatura_text),
                              ("ours (trafilatura)", ours),
                              ("ours, worker pool", pooled(pool))):
            extract(rendered[0][0])  # imports and caches warm
            begun = time.perf_counter()
            texts = [extract(data) for data, _, _ in rendered]
            seconds = time.perf_counter() - begun
            totals = [sum(v) for v in zip(*(shares(t, c, b) for t, (_, c, b)
                                            in zip(texts, rendered, strict=True)), strict=True)]
            chrome = 100 * totals[0] / totals[1]
            content = 100 * totals[2] / totals[3]
            figures[name] = {"chrome_kept_pct": round(chrome, 1),
                             "content_kept_pct": round(content, 1),
                             "pages_per_s": round(len(rendered) / seconds, 1)}
            print(f"  {name:24s} {chrome:9.1f}%   {content:10.1f}%   "
                  f"{len(rendered) / seconds:7.1f}")
        pool.close()
    if args.quality:
        print(f"\nhit@3 over all {len(pages(None))} pages (eval/formats.py --formats md,html; "
              f"questions {HANDBOOK.name}/qa.jsonl)")
        figures["quality"] = quality()
        if args.baseline:
            figures["quality"][f"html@{args.baseline}"] = baseline_quality(args.baseline)
        for name, summary in figures["quality"].items():
            print(f"  {name:5s} {summary}")
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])

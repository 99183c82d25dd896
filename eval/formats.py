"""Quality over converted documents: the TTS handbook as Markdown, as PDF (printed by
Chromium), as Word files (pandoc) and as intranet web pages (pandoc with eval/intranet.html:
site header, menu, breadcrumbs, cookie banner, sidebar and footer around each page), each
built and served, then scored by
../shared/eval/check_http.py --verify-api --loose; plus the share of PDF citations with a page.

    .venv/bin/python eval/formats.py [--limit N] [--formats md,pdf,docx,html] [--keep DIR]

Conversion and indexes go to a temporary folder (or --keep DIR); ../shared is only read.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
HANDBOOK = SHARED / "eval" / "tts-handbook"
INTRANET = Path(__file__).resolve().parent / "intranet.html"
sys.path.insert(0, str(ROOT))

from bench.server import Server  # noqa: E402

# Chromium's own print header and footer (date and title; address and page numbers), as a
# user printing the page would get them: the PDF reader has to drop them.
HEADER = ('<div style="font-size:8px;width:100%;padding:0 1cm;display:flex;'
          'justify-content:space-between"><span class="date"></span>'
          '<span class="title"></span></div>')
FOOTER = ('<div style="font-size:8px;width:100%;padding:0 1cm;display:flex;'
          'justify-content:space-between"><span class="url"></span><span>'
          '<span class="pageNumber"></span>/<span class="totalPages"></span></span></div>')


def pages(limit: int | None) -> list[Path]:
    found = sorted((HANDBOOK / "corpus").rglob("*.md"))
    return found[:limit] if limit else found


def to_html(md: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["pandoc", "-f", "markdown", "-t", "html5", "-s", "--metadata",
                    f"pagetitle={md.stem}", str(md), "-o", str(out)], check=True,
                   capture_output=True)


def to_intranet_page(md: Path, out: Path, template: Path = INTRANET) -> None:
    """The page as an intranet would serve it: its content inside the site's chrome."""
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["pandoc", "-f", "markdown", "-t", "html5", "-s", "--template",
                    str(template), "--metadata", f"pagetitle={md.stem}", str(md), "-o",
                    str(out)], check=True, capture_output=True)


def to_docx(md: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["pandoc", "-f", "markdown", "-t", "docx", str(md), "-o", str(out)],
                   check=True, capture_output=True)


def convert(sources: list[Path], root: Path, formats: list[str]) -> dict[str, Path]:
    corpora = {}
    if "md" in formats:
        corpora["md"] = root / "md"
        for md in sources:
            target = corpora["md"] / md.relative_to(HANDBOOK / "corpus")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(md.read_bytes())
    if "docx" in formats:
        corpora["docx"] = root / "docx"
        started = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda md: to_docx(md, corpora["docx"] / md.relative_to(
                HANDBOOK / "corpus").with_suffix(".docx")), sources))
        print(f"docx: {len(sources)} files in {time.perf_counter() - started:.0f} s")
    if "html" in formats:
        corpora["html"] = root / "intranet"
        started = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda md: to_intranet_page(md, corpora["html"] / md.relative_to(
                HANDBOOK / "corpus").with_suffix(".html")), sources))
        print(f"html: {len(sources)} files in {time.perf_counter() - started:.0f} s")
    if "pdf" in formats:
        from playwright.sync_api import sync_playwright

        corpora["pdf"] = root / "pdf"
        html_dir = root / "html"
        started = time.perf_counter()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                        args=["--no-sandbox"])
            page = browser.new_page()
            for md in sources:
                rel = md.relative_to(HANDBOOK / "corpus")
                html = html_dir / rel.with_suffix(".html")
                to_html(md, html)
                page.goto(html.as_uri())
                out = corpora["pdf"] / rel.with_suffix(".pdf")
                out.parent.mkdir(parents=True, exist_ok=True)
                page.pdf(path=str(out), format="Letter", display_header_footer=True,
                         header_template=HEADER, footer_template=FOOTER,
                         margin={"top": "2cm", "bottom": "2cm", "left": "2cm", "right": "2cm"})
            browser.close()
        print(f"pdf: {len(sources)} files in {time.perf_counter() - started:.0f} s")
    return corpora


def page_share(port: int, qa: Path) -> tuple[int, int]:
    """(citations with a page, citations) over the questions' answers."""
    with_page = total = 0
    for line in qa.read_text("utf-8").splitlines():
        question = json.loads(line)["question"]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/ask", json.dumps({"question": question}).encode(),
            {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.loads(response.read())
        for citation in body["citations"]:
            total += 1
            with_page += isinstance(citation.get("page"), int)
    return with_page, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, help="only the first N pages (sorted by path)")
    parser.add_argument("--formats", default="md,pdf,docx")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    formats = [f for f in args.formats.split(",") if f]
    with tempfile.TemporaryDirectory(prefix="qa-formats-") as tmp:
        root = args.keep or Path(tmp)
        sources = pages(args.limit)
        qa = HANDBOOK / "qa.jsonl"
        if args.limit:
            # Only the questions whose gold is in the converted pages (and the unanswerable).
            texts = [p.read_text("utf-8") for p in sources]
            keep = [line for line in qa.read_text("utf-8").splitlines()
                    if not json.loads(line)["gold"] or any(
                        g in t for g in json.loads(line)["gold"] for t in texts)]
            qa = root / "qa.jsonl"
            root.mkdir(parents=True, exist_ok=True)
            qa.write_text("\n".join(keep) + "\n", "utf-8")
        corpora = convert(sources, root, formats)
        results = {}
        for name, corpus in corpora.items():
            index = root / f"index-{name}"
            started = time.perf_counter()
            subprocess.run([sys.executable, str(ROOT / "scripts" / "build_index.py"), "--corpus",
                            str(corpus), "--index", str(index)], check=True, cwd=ROOT)
            built = time.perf_counter() - started
            with Server({"QA_CORPUS_DIR": str(corpus), "QA_INDEX_DIR": str(index),
                         "QA_RATE_LIMIT": "0", "QA_RELOAD_INTERVAL": "0"},
                        log=root / f"server-{name}.log") as server:
                out = subprocess.run(
                    [sys.executable, str(SHARED / "eval" / "check_http.py"),
                     f"http://127.0.0.1:{server.port}", str(HANDBOOK), str(qa),
                     str(HANDBOOK / "chat.jsonl"), "--verify-api", "--loose"],
                    capture_output=True, text=True, check=True).stdout
                summary = out.strip().splitlines()[-1]
                paged = page_share(server.port, qa) if name == "pdf" else None
            results[name] = summary
            print(f"[{name}] build {built:.0f} s\n{out}")
            if paged:
                print(f"[{name}] citations with a page: {paged[0]}/{paged[1]} "
                      f"({100 * paged[0] / max(1, paged[1]):.1f}%)")
        print("\nsummary")
        for name, summary in results.items():
            print(f"  {name:5s} {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

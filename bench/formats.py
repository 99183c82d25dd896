"""Parsing speed and text quality of the PDF and Word readers, beside the raw libraries.

    .venv/bin/python bench/formats.py [--pages N] [--from DIR]

Converts the first N TTS handbook pages (../shared, read only) to PDF with Chromium (its print
header and footer on) and to Word with pandoc, in a temporary folder, or reads DIR/pdf and
DIR/docx as eval/formats.py --keep DIR left them. Prints pages/s and files/s for our readers
(in-process, and isolated in a child process per file as builds run them), for pypdfium2's
and python-docx's own text calls and for pypdf; and text quality: how many of the eval's gold
phrases each PDF extraction contains, and leftovers of running headers and footers.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docx  # noqa: E402
import pypdf  # noqa: E402
import pypdfium2 as pdfium  # noqa: E402

from eval.formats import HANDBOOK, convert, pages  # noqa: E402
from service.ingest import pdf as pdf_reader  # noqa: E402
from service.ingest import word as word_reader  # noqa: E402
from service.ingest.document import Reader  # noqa: E402
from service.ingest.sandbox import ParseLimits, ReaderPool, read_isolated  # noqa: E402


def pdfium_text(data: bytes) -> list[str]:
    document = pdfium.PdfDocument(data)
    try:
        out = []
        for i in range(len(document)):
            page = document[i]
            textpage = page.get_textpage()
            out.append(textpage.get_text_range())
            textpage.close()
            page.close()
        return out
    finally:
        document.close()


def pypdf_text(data: bytes) -> list[str]:
    return [page.extract_text() for page in pypdf.PdfReader(io.BytesIO(data)).pages]


def docx_text(data: bytes) -> list[str]:
    document = docx.Document(io.BytesIO(data))
    texts = [p.text for p in document.paragraphs]
    for table in document.tables:
        texts.extend(cell.text for row in table.rows for cell in row.cells)
    return texts


def ours_pdf(data: bytes) -> list[str]:
    return [pdf_reader.read(data, "x.pdf")[0][0].text]


def ours_docx(data: bytes) -> list[str]:
    return [word_reader.read(data, "x.docx")[0][0].text]


def isolated(reader: Reader, label: str, pool: ReaderPool | None = None,
             ) -> Callable[[bytes], list[str]]:
    """Through a worker pool as a build reads files (one worker kept for all), or with a new
    worker per file as an admin upload is checked."""
    def run(data: bytes) -> list[str]:
        name = f"x.{label}"
        docs, problems = (pool.read(reader, label, data, name) if pool
                          else read_isolated(reader, label, data, name, ParseLimits()))
        assert not problems, problems
        return [docs[0].text]
    return run


def timed(files: list[bytes], extract: Callable[[bytes], list[str]]) -> tuple[float, list[str]]:
    extract(files[0])  # warm up imports and caches
    started = time.perf_counter()
    texts = ["\n".join(extract(data)) for data in files]
    return time.perf_counter() - started, texts


def loose(text: str) -> str:
    text = re.sub(r"\]\([^)]*\)", " ", text.replace("\u2019", "'").replace("\u201c", '"')
                  .replace("\u201d", '"'))
    return " ".join(re.sub(r"[*_`#|\[\]]", " ", text).lower().split())


def gold_found(texts: list[str], sources: list[Path]) -> tuple[int, int]:
    """Gold phrases of the eval found in the extraction of the file their page became."""
    by_source = {src: loose(t) for src, t in zip(sources, texts, strict=True)}
    found = total = 0
    for line in (HANDBOOK / "qa.jsonl").read_text("utf-8").splitlines():
        for phrase in json.loads(line)["gold"]:
            for src in sources:
                if phrase in src.read_text("utf-8"):
                    total += 1
                    found += loose(phrase) in by_source[src]
                    break
    return found, total


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Convert (or read) the files, print the figures and return them (`make bench` calls
    this with no arguments: the first 60 pages)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=60)
    parser.add_argument("--from", dest="source", type=Path)
    args = parser.parse_args(argv or [])
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="qa-bench-formats-") as tmp:
        sources = pages(None if args.source else args.pages)
        root = args.source or Path(tmp)
        if not args.source:
            convert(sources, root, ["pdf", "docx"])
        rel = [s.relative_to(HANDBOOK / "corpus") for s in sources]
        pdfs = [(root / "pdf" / r.with_suffix(".pdf")).read_bytes() for r in rel]
        docxs = [(root / "docx" / r.with_suffix(".docx")).read_bytes() for r in rel]
        page_count = sum(len(pdfium.PdfDocument(d)) for d in pdfs)
        print(f"{len(pdfs)} PDF files, {page_count} pages, {sum(map(len, pdfs)):,} bytes; "
              f"{len(docxs)} Word files, {sum(map(len, docxs)):,} bytes")
        pool = ReaderPool(ParseLimits())
        print("\nPDF                       pages/s   gold phrases found   header/footer lines left")
        for name, extract in (("pypdfium2 get_text_range", pdfium_text),
                              ("pypdf extract_text", pypdf_text),
                              ("ours (pypdfium2)", ours_pdf),
                              ("ours, worker pool", isolated(pdf_reader.read, "pdf", pool)),
                              ("ours, worker per file", isolated(pdf_reader.read, "pdf"))):
            seconds, texts = timed(pdfs, extract)
            found, total = gold_found(texts, sources)
            running = sum(t.count("file://") for t in texts)
            figures[f"pdf {name}"] = {"pages_per_s": round(page_count / seconds, 1),
                                      "gold_found": found, "gold": total,
                                      "running_lines_left": running}
            print(f"  {name:24s} {page_count / seconds:8.0f}   {found:3d}/{total:<3d}"
                  f"              {running}")
        print("\nWord                      files/s")
        for name, extract in (("python-docx paragraphs", docx_text),
                              ("ours (python-docx)", ours_docx),
                              ("ours, worker pool", isolated(word_reader.read, "docx", pool)),
                              ("ours, worker per file", isolated(word_reader.read, "docx"))):
            seconds, texts = timed(docxs, extract)
            figures[f"docx {name}"] = {"files_per_s": round(len(docxs) / seconds, 1)}
            print(f"  {name:24s} {len(docxs) / seconds:8.1f}")
        pool.close()
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])

"""PDF, Word and PowerPoint end to end: build with bad files beside good ones, ask, cite to the
page, serve the original safely, reuse extracted text (fake encoder, real readers)."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import cast

import pytest
from fastapi.testclient import TestClient

from scripts import build_index as cli
from service.app import create_app
from service.index.indexing import EXTRACTED, build_index
from service.index.progress import Progress
from service.ingest import corpus, registry
from service.ingest.package import MAX_INFLATED_BYTES
from service.ingest.registry import Format, Lazy
from service.qa.retrieval import load_index
from service.settings import Settings
from tests.conftest import FakeEncoder
from tests.test_ingest_sandbox import _hang, _segfault

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@cache
def _zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("[Content_Types].xml", b"<Types/>")
        archive.writestr("word/document.xml", b" " * MAX_INFLATED_BYTES)
    return buffer.getvalue()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    corpus = tmp_path / "corpus"
    (corpus / "hr").mkdir(parents=True)
    shutil.copy(FIXTURES / "fmla.pdf", corpus / "hr" / "fmla.pdf")
    shutil.copy(FIXTURES / "work-schedules.docx", corpus / "hr" / "work-schedules.docx")
    shutil.copy(FIXTURES / "advanced-sick-leave.pptx", corpus / "advanced-sick-leave.pptx")
    shutil.copy(FIXTURES / "dates-intranet.html", corpus / "hr" / "dates.html")
    (corpus / "page.html").write_text("<title>T</title><p>Hello <b>world</b>.</p>"
                                      "<script>alert(1)</script>", "utf-8")
    bad = corpus / "bad"
    bad.mkdir()
    shutil.copy(FIXTURES / "encrypted.pdf", bad / "encrypted.pdf")
    shutil.copy(FIXTURES / "scanned.pdf", bad / "scanned.pdf")
    (bad / "truncated.pdf").write_bytes((FIXTURES / "fmla.pdf").read_bytes()[:1500])
    (bad / "bomb.docx").write_bytes(_zip_bomb())
    shutil.copy(FIXTURES / "work-schedules.docx", bad / "renamed.pdf")
    (bad / "slides.key").write_bytes(b"not ours")
    return Settings(corpus_dir=corpus, index_dir=tmp_path / "index", rate_limit=0,
                    parse_timeout=30)


@pytest.fixture
def client(settings: Settings, fake_encoder: FakeEncoder) -> Iterator[TestClient]:
    build_index(settings, encoder=fake_encoder)
    with TestClient(create_app(settings, encoder=fake_encoder)) as client:
        yield client


def test_a_build_publishes_the_good_files_and_names_every_bad_one(
        settings: Settings, fake_encoder: FakeEncoder) -> None:
    lines: list[str] = []
    report = build_index(settings, encoder=fake_encoder, tracker=Progress(lines.append, 3600))
    assert report.published
    # Skipped files count towards the reading stage too, so it ends at its total.
    assert any(line.startswith("reading files: 11/11 (") for line in lines), lines
    assert sorted(report.added) == ["advanced-sick-leave.pptx", "hr/dates.html", "hr/fmla.pdf",
                                    "hr/work-schedules.docx", "page.html"]
    reasons = dict(s.split(": ", 1) for s in report.skipped)
    assert reasons == {
        "bad/bomb.docx": f"its parts inflate to {MAX_INFLATED_BYTES + 8:,} bytes, over the "
                         f"{MAX_INFLATED_BYTES:,}-byte limit (a zip bomb?)",
        "bad/encrypted.pdf": "encrypted PDF: it needs a password, which is not supported",
        "bad/renamed.pdf": "not a PDF file: its content looks like a Word document",
        "bad/scanned.pdf": "no text layer: OCR is not supported (a scanned or image-only PDF)",
        "bad/slides.key": "unsupported file type '.key' (supported: .txt, .md, .html, .htm, "
                          ".jsonl, .pdf, .docx, .pptx)",
        "bad/truncated.pdf": reasons["bad/truncated.pdf"],
    }
    assert reasons["bad/truncated.pdf"].startswith("not a readable PDF")


def test_citations_from_paged_files_carry_their_page(client: TestClient) -> None:
    body = client.post("/api/ask", json={
        "question": "How many weeks of unpaid FMLA leave can I take every 52 weeks?",
        "top_k": 5}).json()
    pdf = [c for c in body["citations"] if c["doc_id"] == "hr/fmla.pdf"]
    assert pdf, body
    for c in body["citations"]:
        doc = client.get(f"/api/documents/{c['doc_id']}").json()
        assert doc["text"][c["start"]:c["end"]] == c["text"]
        if c["doc_id"].endswith((".pdf", ".pptx")):
            assert isinstance(c["page"], int) and c["page"] >= 1
        else:
            assert "page" not in c
    index = load_index(client.app.state.settings.index_dir)  # type: ignore[attr-defined]
    doc = index.documents["hr/fmla.pdf"]
    assert all(c["page"] == doc.page_at(c["start"]) for c in pdf)


def test_a_web_page_is_served_without_its_site_chrome_and_cited_verbatim(
        client: TestClient) -> None:
    doc = client.get("/api/documents/hr/dates.html").json()
    assert doc["title"] == "Performance Management Important Dates"
    assert "cookies" not in doc["text"] and "All rights reserved" not in doc["text"]
    body = client.post("/api/ask", json={
        "question": "When is the end of year performance review self-assessment due?",
        "top_k": 5}).json()
    cited = [c for c in body["citations"] if c["doc_id"] == "hr/dates.html"]
    assert cited, body
    for c in cited:
        assert doc["text"][c["start"]:c["end"]] == c["text"] and "page" not in c


def test_the_original_pdf_is_served_inline(client: TestClient, settings: Settings) -> None:
    r = client.get("/api/documents/hr/fmla.pdf/source")
    assert r.status_code == 200
    assert r.content == (settings.corpus_dir / "hr" / "fmla.pdf").read_bytes()
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"] == "inline; filename*=UTF-8''fmla.pdf"
    assert r.headers["x-content-type-options"] == "nosniff"


def test_originals_that_could_run_script_are_sandboxed_downloads(client: TestClient) -> None:
    r = client.get("/api/documents/page.html/source")
    assert r.status_code == 200 and b"<script>" in r.content
    assert r.headers["content-disposition"] == "attachment; filename*=UTF-8''page.html"
    assert r.headers["content-security-policy"].startswith("sandbox;")
    assert r.headers["x-content-type-options"] == "nosniff"
    docx = client.get("/api/documents/hr/work-schedules.docx/source")
    assert docx.headers["content-disposition"].startswith("attachment;")
    assert docx.headers["content-type"].startswith("application/vnd.openxmlformats")


def test_originals_are_confined_to_the_corpus(client: TestClient, settings: Settings,
                                              tmp_path: Path) -> None:
    assert client.get("/api/documents/nope.pdf/source").status_code == 404
    assert client.get("/api/documents/bad/encrypted.pdf/source").status_code == 404
    # A file swapped for a symlink after the build is not followed.
    secret = tmp_path / "secret.txt"
    secret.write_text("secret", "utf-8")
    target = settings.corpus_dir / "hr" / "fmla.pdf"
    target.unlink()
    os.symlink(secret, target)
    r = client.get("/api/documents/hr/fmla.pdf/source")
    assert r.status_code == 404 and "symbolic link" in r.json()["detail"]


def test_an_oversized_original_is_refused(client: TestClient, settings: Settings) -> None:
    client.app.state.settings = settings.model_copy(  # type: ignore[attr-defined]
        update={"max_file_bytes": 1000})
    assert client.get("/api/documents/hr/fmla.pdf/source").status_code == 413


def test_an_unchanged_file_is_not_parsed_again(settings: Settings,
                                               fake_encoder: FakeEncoder) -> None:
    build_index(settings, encoder=fake_encoder)
    cached = list((settings.index_dir / EXTRACTED).glob("*.json"))
    # The PDF, the Word file, the slides and the two web pages; text files are not kept.
    assert len(cached) == 5
    # Mark the cached extraction of the PDF: the next build must use it, not the file.
    for path in cached:
        records = json.loads(path.read_text("utf-8"))
        if records[0]["id"] == "hr/fmla.pdf":
            records[0]["text"] = records[0]["text"].replace("FMLA", "FMLX")
            path.write_text(json.dumps(records), "utf-8")
    (settings.corpus_dir / "new.txt").write_text("A new note.", "utf-8")
    report = build_index(settings, encoder=fake_encoder)
    assert report.added == ["new.txt"] and report.changed == ["hr/fmla.pdf"]
    assert "FMLX" in load_index(settings.index_dir).documents["hr/fmla.pdf"].text
    # Files removed from the corpus leave the cache at the next build.
    (settings.corpus_dir / "hr" / "work-schedules.docx").unlink()
    build_index(settings, encoder=fake_encoder)
    assert len(list((settings.index_dir / EXTRACTED).glob("*.json"))) == 4


def test_a_record_original_is_its_jsonl_file_and_ids_ending_in_source_still_resolve(
        settings: Settings, fake_encoder: FakeEncoder) -> None:
    (settings.corpus_dir / "records.jsonl").write_text(
        '{"id": "r1", "text": "First record."}\n'
        '{"id": "notes/source", "text": "A record whose id ends in source."}\n', "utf-8")
    build_index(settings, encoder=fake_encoder)
    with TestClient(create_app(settings, encoder=fake_encoder)) as client:
        r = client.get("/api/documents/r1/source")
        assert r.status_code == 200
        assert r.content == (settings.corpus_dir / "records.jsonl").read_bytes()
        assert r.headers["content-disposition"] == "attachment; filename*=UTF-8''records.jsonl"
        doc = client.get("/api/documents/notes/source")
        assert doc.status_code == 200
        assert doc.json()["text"] == "A record whose id ends in source."


def test_the_builder_exits_0_and_names_every_bad_file_hung_and_crashed_parsers_too(
        settings: Settings, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """scripts/build_index.py over the bad files, plus two PDFs whose reader hangs or dies (no
    real file does either reliably, so those two get a misbehaving reader in their worker)."""
    for name in ("hangs.pdf", "crashes.pdf"):
        shutil.copy(FIXTURES / "fmla.pdf", settings.corpus_dir / "bad" / name)
    faults = {"bad/hangs.pdf": _hang, "bad/crashes.pdf": _segfault}
    real = registry.format_for

    def format_for(name: str) -> Format | None:
        fmt = real(name)
        return replace(fmt, read=cast(Lazy, faults[name])) if fmt and name in faults else fmt

    monkeypatch.setattr(corpus, "format_for", format_for)
    monkeypatch.setattr(cli, "build_index",
                        lambda s, **kw: build_index(s, encoder=FakeEncoder(), **kw))
    monkeypatch.setenv("QA_PARSE_TIMEOUT", "2")
    argv = ["--corpus", str(settings.corpus_dir), "--index", str(settings.index_dir)]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    skipped = dict(line.removeprefix("skipped ").split(": ", 1) for line in err.splitlines()
                   if line.startswith("skipped "))
    assert sorted(skipped) == ["bad/bomb.docx", "bad/crashes.pdf", "bad/encrypted.pdf",
                               "bad/hangs.pdf", "bad/renamed.pdf", "bad/scanned.pdf",
                               "bad/slides.key", "bad/truncated.pdf"]
    assert skipped["bad/hangs.pdf"] == ("the pdf reader took longer than 2 s and was stopped "
                                        "(QA_PARSE_TIMEOUT)")
    assert skipped["bad/crashes.pdf"] == "the pdf reader crashed (killed by SIGSEGV)"
    assert sorted(load_index(settings.index_dir).documents) == [
        "advanced-sick-leave.pptx", "hr/dates.html", "hr/fmla.pdf", "hr/work-schedules.docx",
        "page.html"]

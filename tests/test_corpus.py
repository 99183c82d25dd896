"""Reading files into documents: formats, decoding rules, and unusable files."""

from __future__ import annotations

import json
import os
import tracemalloc
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from service.ingest.corpus import (
    CorpusError,
    Document,
    html_to_text,
    iter_files,
    parse_file,
    read_documents,
    read_file,
)


def test_txt_text_is_the_decoded_file_with_universal_newlines() -> None:
    docs, problems = parse_file("a.txt", b"Title line\r\n\r\nBody text.\r\n", 10_000)
    assert problems == []
    assert docs == [Document("a.txt", "Title line", "Title line\n\nBody text.\n")]


def test_markdown_title_drops_the_hashes() -> None:
    docs, _ = parse_file("guide/intro.md", b"# Getting started\n\nRead this.\n", 10_000)
    assert docs[0].id == "guide/intro.md"
    assert docs[0].title == "Getting started"


def test_jsonl_records_become_documents_with_their_ids() -> None:
    lines = [{"_id": "7", "title": "T", "text": "Alpha."}, {"id": 8, "text": "Beta."}]
    data = "\n".join(json.dumps(r) for r in lines).encode()
    docs, problems = parse_file("c.jsonl", data, 10_000)
    assert problems == []
    assert docs == [Document("7", "T", "Alpha."), Document("8", "", "Beta.")]


def test_jsonl_bad_lines_are_named_and_skipped() -> None:
    data = b'{"_id": "1", "text": "ok"}\nnot json\n{"_id": "2"}\n["x"]\n'
    docs, problems = parse_file("c.jsonl", data, 10_000)
    assert [d.id for d in docs] == ["1"]
    assert [p.source for p in problems] == ["c.jsonl:2", "c.jsonl:3", "c.jsonl:4"]


def test_html_keeps_visible_text_only() -> None:
    markup = """<html><head><title>Page  title</title><style>p{color:red}</style></head>
    <body><nav>Home</nav><h1>Heading</h1><p>First <b>bold</b> para.</p>
    <script>alert(1)</script><p>Second&amp;last.</p></body></html>"""
    title, text = html_to_text(markup)
    assert title == "Page title"
    assert "alert" not in text and "color" not in text
    assert "First bold para." in text and "Second&last." in text
    assert text.index("Heading") < text.index("First")


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("bin.txt", b"\x00\x01\x02binary", "binary"),
        ("latin.txt", "caf\xe9".encode("latin-1"), "not valid UTF-8"),
        ("empty.md", b"   \n\n", "empty"),
        ("big.txt", b"x" * 101, "over the 100-byte limit"),
    ],
)
def test_unusable_files_become_problems(name: str, data: bytes, reason: str) -> None:
    docs, problems = parse_file(name, data, 100)
    assert docs == []
    assert len(problems) == 1 and problems[0].source == name and reason in problems[0].reason


def test_read_documents_skips_bad_files_and_names_them(tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text("Good text.", "utf-8")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00")
    (tmp_path / ".hidden.txt").write_text("Hidden.", "utf-8")
    (tmp_path / "notes.pdf").write_bytes(b"%PDF")
    (tmp_path / "report.doc").write_bytes(b"\xd0\xcf\x11\xe0")
    docs, problems = read_documents(tmp_path, 10_000)
    assert [d.id for d in docs] == ["good.txt"]
    assert [p.source for p in problems] == ["bad.txt", "notes.pdf", "report.doc"]
    assert "not a readable PDF" in problems[1].reason
    assert problems[2].reason.startswith("unsupported file type '.doc'")


def test_read_documents_fails_when_nothing_is_usable(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"\x00")
    with pytest.raises(CorpusError, match="bad.txt"):
        read_documents(tmp_path, 10_000)


def test_duplicate_ids_are_an_error_naming_both_files(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"_id": "x", "text": "one"}\n', "utf-8")
    (tmp_path / "b.jsonl").write_text('{"_id": "x", "text": "two"}\n', "utf-8")
    with pytest.raises(CorpusError, match=r"'x'.*a\.jsonl.*b\.jsonl"):
        read_documents(tmp_path, 10_000)


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        read_documents(tmp_path / "nope", 10_000)


def test_symbolic_links_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("The vault code is 4321.", "utf-8")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text("Good text.", "utf-8")
    (corpus / "passwd.txt").symlink_to(secret)
    (corpus / "linked").symlink_to(outside, target_is_directory=True)
    (corpus / "dangling.md").symlink_to(tmp_path / "gone.md")
    docs, problems = read_documents(corpus, 10_000)
    assert [d.id for d in docs] == ["good.txt"]
    assert {p.source: p.reason for p in problems} == {
        name: "a symbolic link (links are not followed)"
        for name in ("dangling.md", "linked", "passwd.txt")}
    assert [p.name for p in iter_files(corpus)] == ["good.txt"]
    with pytest.raises(ValueError, match="symbolic link"):
        read_file(corpus / "passwd.txt", 10_000)


def test_a_file_over_the_limit_is_refused_from_its_size_without_reading_it(
        tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text("Good text.", "utf-8")
    with (tmp_path / "huge.txt").open("wb") as fh:
        fh.truncate(64_000_000)  # sparse: costs no disk, but reading it would cost 64 MB
    tracemalloc.start()
    try:
        docs, problems = read_documents(tmp_path, 10_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [d.id for d in docs] == ["good.txt"]
    assert [str(p) for p in problems] == [
        "huge.txt: file is 64,000,000 bytes, over the 10,000-byte limit"]
    assert peak < 1_000_000


def test_a_named_pipe_in_the_corpus_does_not_hang_the_read(tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text("Good text.", "utf-8")
    os.mkfifo(tmp_path / "pipe.txt")
    docs, _ = read_documents(tmp_path, 10_000)
    assert [d.id for d in docs] == ["good.txt"]
    with pytest.raises(ValueError, match="not a regular file"):
        read_file(tmp_path / "pipe.txt", 10_000)


@pytest.mark.parametrize("markup", [
    "</" * 100_000, "<!" * 100_000, "<" * 200_000, "<a " + "b=c " * 50_000,
    "<p>Text</p>" + "</" * 100_000, "<!--" + "<a>" * 30_000,
], ids=range(6))
def test_html_without_closing_brackets_is_read_in_linear_time(
        markup: str, within: Callable[[float], AbstractContextManager[None]]) -> None:
    # Python's HTMLParser rescanned to the end for every "<" it could not close: 26 s here.
    with within(2.0):
        html_to_text(markup)


def test_text_after_the_last_tag_is_kept_as_text() -> None:
    assert html_to_text("<p>a &lt; b</p> tail <b and & c") == ("", "a < b\n\ntail <b and & c\n")

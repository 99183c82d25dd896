"""Building versions: what is embedded or reused, bad files, and never breaking a good index."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from service.index import store
from service.index.encoder import Span
from service.index.indexing import (
    BuildError,
    build_index,
    embedding_input,
    is_stale,
    lexical_terms,
    referents,
)
from service.ingest import markup
from service.ingest.chunking import split
from service.ingest.corpus import CorpusError, Document
from service.qa.retrieval import load_index
from service.settings import Settings
from tests.conftest import FakeEncoder


def test_unchanged_corpus_is_not_rebuilt(fake_settings: Settings,
                                         fake_encoder: FakeEncoder) -> None:
    first = store.current_version(fake_settings.index_dir)
    report = build_index(fake_settings, encoder=fake_encoder)
    assert not report.published and report.version == first
    assert is_stale(fake_settings) is not None  # the fake encoder is not the configured one


def test_changed_document_reembeds_only_its_chunks(fake_settings: Settings,
                                                   fake_encoder: FakeEncoder) -> None:
    # The second document brings titles into every passage's context (see embedding_input),
    # so that build embeds everything once; from then on only what changed is embedded.
    (fake_settings.corpus_dir / "extra.md").write_text("# Extra\n\nA new short note.\n", "utf-8")
    report = build_index(fake_settings, encoder=fake_encoder)
    assert report.published and report.added == ["extra.md"]
    before = load_index(fake_settings.index_dir)
    (fake_settings.corpus_dir / "more.md").write_text("# More\n\nAnother short note.\n", "utf-8")
    fake_encoder.calls = 0
    report = build_index(fake_settings, encoder=fake_encoder)
    assert report.published and report.added == ["more.md"]
    assert report.embedded == 1 and report.reused == len(before.chunks)
    assert fake_encoder.calls == 1
    after = load_index(fake_settings.index_dir)
    assert len(after.chunks) == len(before.chunks) + 1


def test_bad_files_are_skipped_and_named(fake_settings: Settings,
                                         fake_encoder: FakeEncoder) -> None:
    (fake_settings.corpus_dir / "binary.txt").write_bytes(b"\x00\x01garbage")
    (fake_settings.corpus_dir / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (fake_settings.corpus_dir / "empty.md").write_bytes(b"")
    report = build_index(fake_settings, encoder=fake_encoder)
    assert report.published
    assert sorted(s.split(":")[0] for s in report.skipped) == [
        "binary.txt", "empty.md", "latin1.txt"]


def test_strict_build_fails_on_bad_files_and_keeps_the_old_version(
        fake_settings: Settings, fake_encoder: FakeEncoder) -> None:
    good = store.current_version(fake_settings.index_dir)
    (fake_settings.corpus_dir / "binary.txt").write_bytes(b"\x00\x01garbage")
    with pytest.raises(BuildError, match="binary.txt"):
        build_index(fake_settings, encoder=fake_encoder, strict=True)
    assert store.current_version(fake_settings.index_dir) == good
    load_index(fake_settings.index_dir)


def test_nothing_usable_fails_and_keeps_the_old_version(fake_settings: Settings,
                                                        fake_encoder: FakeEncoder) -> None:
    good = store.current_version(fake_settings.index_dir)
    for path in fake_settings.corpus_dir.iterdir():
        path.write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(CorpusError, match="no usable documents"):
        build_index(fake_settings, encoder=fake_encoder)
    assert store.current_version(fake_settings.index_dir) == good


def test_failed_write_publishes_nothing(fake_settings: Settings, fake_encoder: FakeEncoder,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    good = store.current_version(fake_settings.index_dir)
    (fake_settings.corpus_dir / "new.txt").write_text("New text here.", "utf-8")

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("service.index.indexing.faiss.write_index", disk_full)
    with pytest.raises(OSError, match="No space"):
        build_index(fake_settings, encoder=fake_encoder)
    assert store.current_version(fake_settings.index_dir) == good
    leftovers = list((fake_settings.index_dir / "versions").glob(".staging-*"))
    assert leftovers == []


class _SentenceDropper(FakeEncoder):
    """Gives one sentence vector fewer than a passage has sentences."""

    def encode_passages(self, texts: Sequence[str], spans: Sequence[Sequence[Span]],
                        batch_size: int = 32, done: Callable[[int], None] | None = None,
                        ) -> tuple[np.ndarray, list[np.ndarray]]:
        vectors, sentences = super().encode_passages(texts, spans, batch_size, done)
        return vectors, [m[1:] for m in sentences]


def test_missing_sentence_vectors_fail_the_build_and_publish_nothing(
        fake_settings: Settings) -> None:
    good = store.current_version(fake_settings.index_dir)
    (fake_settings.corpus_dir / "new.txt").write_text("One sentence. And another.", "utf-8")
    with pytest.raises(BuildError, match="sentence vectors for a passage"):
        build_index(fake_settings, encoder=_SentenceDropper())
    assert store.current_version(fake_settings.index_dir) == good
    assert list((fake_settings.index_dir / "versions").glob(".staging-*")) == []


def test_cli_builds_into_any_folder(tmp_path: Path, corpus_dir: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from scripts import build_index as cli

    monkeypatch.setattr(cli, "build_index",
                        lambda settings, **kw: build_index(settings, encoder=FakeEncoder(), **kw))
    assert cli.main(["--corpus", str(corpus_dir), "--index", str(tmp_path / "ix")]) == 0
    assert store.current_version(tmp_path / "ix") is not None
    (tmp_path / "empty").mkdir()
    assert cli.main(["--corpus", str(tmp_path / "empty"), "--index", str(tmp_path / "ix2")]) == 1


def test_table_rows_are_read_with_their_header() -> None:
    text = ("## Awards\n\nIntro line.\n\n| Rating | Award |\n| --- | --- |\n"
            + "".join(f"| Level {i} | Up to {i}% of pay |\n" for i in range(1, 40)))
    doc = Document("a.md", "Awards", text)
    chunks = split(doc, 200)
    inside = [c for c in chunks if text[c.start] != "I" and "Level 3" not in text[c.start:c.end]]
    assert inside, "some chunk starts inside the table"
    view = markup.visible(text)
    model_input, spans = embedding_input(doc, inside[-1], view)
    assert model_input.startswith("Awards\nRating | Award\n")
    assert "|" not in model_input.split("\n", 2)[2]  # the row itself is read without pipes
    assert [model_input[s:e] for s, e in spans] == [view[s:e] for s, e in inside[-1].sentences]
    assert {"rate", "award"} <= set(lexical_terms(doc, inside[-1], view))


def test_the_title_joins_the_context_only_when_it_tells_documents_apart() -> None:
    text = "# Guide\n\n## Returning\n\nCome back after twelve weeks.\n"
    doc = Document("g.md", "Parental leave", text)
    chunk = split(doc, 700)[0]
    body = "Come back after twelve weeks."
    assert embedding_input(doc, chunk)[0] == f"Parental leave\nReturning\n{body}"
    # One document: every passage would share the title, so the heading stands alone...
    assert embedding_input(doc, chunk, titled=False)[0] == f"Returning\n{body}"
    # ... and the title is used only where there is no heading.
    bare = Document("b.txt", "Notes", "Come back after twelve weeks.")
    assert embedding_input(bare, split(bare, 700)[0], titled=False)[0].startswith("Notes\n")


def test_a_chunk_opening_with_they_reads_the_sentence_before_it() -> None:
    first = ("A chief product officer is an executive responsible for the products of a company. "
             "The role sits above the product managers.")
    second = "They are most common in technology companies. Banks have them too."
    third = "Salaries vary by country."
    text = f"{first} {second}\n\n{third}\n"
    doc = Document("roles.txt", "Roles", text)
    chunks = split(doc, len(first) + 5)
    assert [text[c.start : c.start + 12] for c in chunks] == ["A chief prod", "They are mos"]
    found = referents(chunks, {doc.id: text})
    # Only the chunk that opens by referring back gets the sentence before it.
    assert found == ["", "The role sits above the product managers."]
    assert referents(list(reversed(chunks)), {doc.id: text}) == ["", ""]
    model_input, spans = embedding_input(doc, chunks[1], text, referent=found[1])
    assert model_input.startswith("Roles\nThe role sits above the product managers.\nThey are")
    # The referent is context: the spans still point at the chunk's own sentences.
    assert [model_input[s:e] for s, e in spans] == [text[s:e] for s, e in chunks[1].sentences]
    assert {"role", "product", "manag"} <= set(lexical_terms(doc, chunks[1], text, found[1]))
    assert "manag" not in lexical_terms(doc, chunks[1], text)
    # A chunk never takes a referent from another document.
    other = Document("other.txt", "Other", "They meet monthly.")
    assert referents([chunks[0], *split(other, 700)], {doc.id: text, other.id: other.text}) == [
        "", ""]


def test_the_build_gives_referents_to_the_model_and_to_bm25(tmp_path: Path,
                                                            fake_encoder: FakeEncoder) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "roles.txt").write_text(
        "A chief product officer is an executive responsible for the products of a company, "
        "leading the people who design, build and sell them. "
        "The role sits above the product managers.\n\n"
        "They are most common in technology companies, and in banks and newspapers too.\n",
        "utf-8")
    settings = Settings(corpus_dir=corpus, index_dir=tmp_path / "index", chunk_chars=200)
    build_index(settings, encoder=fake_encoder)
    index = load_index(settings.index_dir)
    assert len(index.chunks) == 2 and index.text(1).startswith("They are")
    # BM25 finds the second passage by words only its referent has.
    assert index.lexical.scores(["manag"])[1] > 0
    # ... and its vector is the model's reading of referent + passage.
    chunk = index.chunks[1]
    read, _ = embedding_input(index.documents[chunk.doc_id], chunk, titled=False,
                              referent="The role sits above the product managers.")
    assert "\nThe role sits above the product managers.\nThey are" in read
    expected = fake_encoder.encode_queries([read])[0]
    assert np.allclose(np.asarray(index.vectors[np.array([1])])[0], expected)

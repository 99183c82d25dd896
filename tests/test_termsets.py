"""Passage words and sentence terms: made at build time, stored, and equal to the text's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.index import lexical, store, termsets
from service.index.indexing import build_index
from service.index.termsets import term_sets
from service.qa.answer import coverage, score_sentences
from service.qa.retrieval import SearchIndex, load_index, retrieve
from service.settings import Settings
from tests.conftest import FakeEncoder
from tests.test_dense_index import corpus


@pytest.fixture
def index(tmp_path: Path, fake_encoder: FakeEncoder) -> SearchIndex:
    settings = Settings(corpus_dir=corpus(tmp_path), index_dir=tmp_path / "index")
    build_index(settings, encoder=fake_encoder)
    return load_index(settings.index_dir)


def test_term_sets_round_trip() -> None:
    sets = term_sets([["b", "a", "b"], [], ["c", "a"]])
    assert len(sets) == 3
    assert [sets.get(i) for i in range(3)] == [
        {sets.id_of("a"), sets.id_of("b")}, frozenset(), {sets.id_of("a"), sets.id_of("c")}]
    assert sets.id_of("never-seen") == -1


def test_runs_of_sets_are_the_sets_one_by_one() -> None:
    sets = term_sets([["b", "a"], [], ["c", "a"], ["d"], []])
    for lo in range(len(sets) + 1):
        for hi in range(lo, len(sets) + 1):
            assert sets.run(lo, hi) == [sets.get(i) for i in range(lo, hi)]


def test_stored_sets_are_the_text_s(index: SearchIndex) -> None:
    words, terms = index.chunk_words, index.sentence_terms
    n = 0
    for i, chunk in enumerate(index.chunks):
        text = index.documents[chunk.doc_id].text
        assert words.get(i) == {words.ids[w] for w in termsets.WORDS.findall(
            index.text(i).lower())}
        for start, end in chunk.sentences:
            assert terms.get(n) == {terms.ids[t] for t in lexical.terms(text[start:end])}
            n += 1
    assert n == len(terms) == len(index.sentence_vectors)


def test_versions_without_stored_sets_compute_them(index: SearchIndex, tmp_path: Path) -> None:
    folder = tmp_path / "index" / "versions" / index.version
    manifest = store.read_manifest(folder)
    for name in termsets.FILES:
        (folder / name).unlink()
        del manifest["files"][name]
    (folder / store.MANIFEST).write_text(json.dumps(manifest), "utf-8")
    again = load_index(tmp_path / "index")
    for old, new in ((index.chunk_words, again.chunk_words),
                     (index.sentence_terms, again.sentence_terms)):
        assert old.ids == new.ids
        assert (old.ptr == new.ptr).all() and (old.members == new.members).all()


def test_sentence_coverage_equals_coverage_of_the_text(index: SearchIndex,
                                                       fake_encoder: FakeEncoder) -> None:
    question = "Which treasurer plans the budget of unknownword teams?"
    terms = lexical.terms(question)
    vector = fake_encoder.encode_queries([question])[0]
    hits = retrieve(index, vector, terms, 5)
    for s in score_sentences(index, vector, terms, hits):
        text = index.documents[index.chunks[hits[s.hit].chunk].doc_id].text
        assert s.coverage == coverage(index, terms, text[s.start : s.end])

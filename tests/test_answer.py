"""Answer composition: sentence scoring, the decline threshold, markers and highlights."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service import answer as answer_module
from service import lexical
from service.answer import (
    DECLINE_TEXT,
    MAX_ANSWER_CHARS,
    ScoredSentence,
    compose_answer,
    confidence,
    coverage,
    score_sentences,
)
from service.indexing import build_index
from service.retrieval import SearchIndex, load_index, retrieve
from service.settings import Settings
from tests.conftest import FakeEncoder

TEXT = """Company roles

The chairman leads the board of directors. They meet every quarter in London.
The treasurer manages the budget and reports to the board.

Product

The product team ships a new release every month. Releases are announced by email.
"""


@pytest.fixture
def index(tmp_path: Path, fake_encoder: FakeEncoder) -> SearchIndex:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "roles.txt").write_text(TEXT, "utf-8")
    settings = Settings(corpus_dir=corpus, index_dir=tmp_path / "index", chunk_chars=200)
    build_index(settings, encoder=fake_encoder)
    return load_index(settings.index_dir)


def _answer(index: SearchIndex, encoder: FakeEncoder, question: str,
            k: int = 3) -> answer_module.Answer:
    vector = encoder.encode_queries([question])[0]
    terms = lexical.terms(question)
    return compose_answer(index, vector, terms, retrieve(index, vector, terms, k))


def test_best_sentence_is_scored_first(index: SearchIndex, fake_encoder: FakeEncoder) -> None:
    question = "Who manages the budget?"
    vector = fake_encoder.encode_queries([question])[0]
    terms = lexical.terms(question)
    scored = score_sentences(index, vector, terms, retrieve(index, vector, terms, 3))
    best = scored[0]
    doc = index.documents["roles.txt"].text
    assert doc[best.start : best.end].startswith("The treasurer manages the budget")
    assert [s.score for s in scored] == sorted((s.score for s in scored), reverse=True)
    assert best.coverage == 1.0


def test_coverage_weights_terms_by_idf(index: SearchIndex) -> None:
    terms = lexical.terms("treasurer budget unicorns")
    full = coverage(index, terms, "The treasurer manages the budget")
    assert 0 < full < 1, "an unknown term keeps coverage below 1"
    assert coverage(index, terms, "nothing relevant") == 0.0


def test_answer_quotes_and_cites_verbatim(index: SearchIndex,
                                          fake_encoder: FakeEncoder) -> None:
    result = _answer(index, fake_encoder, "Who manages the budget and reports to the board?")
    assert result.answered
    assert len(result.text) <= MAX_ANSWER_CHARS
    markers = [int(m) for m in re.findall(r"\[(\d+)\]", result.text)]
    assert markers and markers[0] == 1
    first = result.citations[0]
    doc = index.documents[first.doc_id].text
    assert doc[first.start : first.end] == first.text
    for s, e in first.highlights:
        assert doc[s:e] in result.text
    used = {c.n for c in result.citations if c.highlights}
    assert used == set(markers)


def test_continuation_sentence_brings_its_antecedent(index: SearchIndex,
                                                     fake_encoder: FakeEncoder) -> None:
    result = _answer(index, fake_encoder, "Where do they meet every quarter, in London?")
    assert result.answered
    assert result.text.index("The chairman leads") < result.text.index("They meet every")


def test_weak_support_is_declined(index: SearchIndex, fake_encoder: FakeEncoder) -> None:
    result = _answer(index, fake_encoder, "What is the boiling point of mercury?")
    assert not result.answered
    assert result.text == DECLINE_TEXT
    assert result.confidence < answer_module.DECLINE_BELOW
    assert result.citations, "the nearest passages are still returned"
    assert all(not c.highlights for c in result.citations)


def test_confidence_threshold_is_the_decision(monkeypatch: pytest.MonkeyPatch,
                                              index: SearchIndex,
                                              fake_encoder: FakeEncoder) -> None:
    question = "Who manages the budget?"
    assert _answer(index, fake_encoder, question).answered
    monkeypatch.setattr(answer_module, "DECLINE_BELOW", 1.01)
    assert not _answer(index, fake_encoder, question).answered


def test_confidence_grows_with_both_signals() -> None:
    def s(cos: float, cov: float) -> ScoredSentence:
        return ScoredSentence(0, 0, 0, 1, 0.0, cos, cov)

    assert confidence(s(0.8, 0.5)) > confidence(s(0.4, 0.5))
    assert confidence(s(0.6, 0.9)) > confidence(s(0.6, 0.1))
    assert 0.0 < confidence(s(0.0, 0.0)) < confidence(s(1.0, 1.0)) < 1.0

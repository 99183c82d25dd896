"""Answer composition: sentence scoring, the decline threshold, markers and highlights."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from service.index import lexical
from service.index.indexing import build_index
from service.qa import answer as answer_module
from service.qa.answer import (
    DECLINE_TEXT,
    MAX_ANSWER_CHARS,
    ScoredSentence,
    compose_answer,
    confidence,
    coverage,
    rerank,
    score_sentences,
)
from service.qa.answertype import wanted
from service.qa.retrieval import Hit, SearchIndex, load_index, retrieve
from service.settings import Settings
from tests.conftest import FakeEncoder

TEXT = """Company roles

The chairman leads the board of directors. They meet every quarter in London.
The treasurer manages the budget and reports to the board.

Product

The product team ships a new release every month. Releases are announced by email.
"""


def _one_file_index(tmp_path: Path, encoder: FakeEncoder, name: str, text: str) -> SearchIndex:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / name).write_text(text, "utf-8")
    settings = Settings(corpus_dir=corpus, index_dir=tmp_path / "index", chunk_chars=200)
    build_index(settings, encoder=encoder)
    return load_index(settings.index_dir)


@pytest.fixture
def index(tmp_path: Path, fake_encoder: FakeEncoder) -> SearchIndex:
    return _one_file_index(tmp_path, fake_encoder, "roles.txt", TEXT)


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


def test_confidence_counts_the_kind_of_answer() -> None:
    plain = ScoredSentence(0, 0, 0, 1, 0.0, 0.5, 0.5)
    typed = ScoredSentence(0, 0, 0, 1, 0.0, 0.5, 0.5, typed=True)
    assert confidence(typed) > confidence(plain)


HANDBOOK = """---
title: Awards
---

## Year-end awards

Awards are paid in the spring, once every review is done, and they depend on the **budget**.

| Rating | Award |
| ------ | ----- |
| Level 5 | Up to 3.85% of pay |
| Level 4 | Up to 2.1% of pay |

## Leave

Ask the [Chief Executive Officer](https://example.org/ceo) before you take more than a week.
"""


@pytest.fixture
def handbook(tmp_path: Path, fake_encoder: FakeEncoder) -> SearchIndex:
    return _one_file_index(tmp_path, fake_encoder, "awards.md", HANDBOOK)


def _ask(index: SearchIndex, encoder: FakeEncoder, question: str) -> answer_module.Answer:
    vector = encoder.encode_queries([question])[0]
    terms = lexical.terms(question)
    return compose_answer(index, vector, terms, retrieve(index, vector, terms, 3),
                          wanted(question, index.acronyms))


def test_a_table_row_is_quoted_with_its_header(handbook: SearchIndex,
                                               fake_encoder: FakeEncoder) -> None:
    result = _ask(handbook, fake_encoder, "How big is the award for Level 4?")
    assert result.answered
    assert result.text.startswith("Rating: Level 4; Award: Up to 2.1% of pay [")
    cited = result.citations[0]
    row = HANDBOOK.index("| Level 4")
    assert cited.highlights[0][0] == row + 2 and HANDBOOK[cited.start:cited.end] == cited.text


def test_markdown_answers_show_no_markup(handbook: SearchIndex,
                                         fake_encoder: FakeEncoder) -> None:
    result = _ask(handbook, fake_encoder, "When are awards paid, and what do they depend on?")
    assert result.text.startswith("Awards are paid in the spring, once every review is done, "
                                  "and they depend on the budget. [")
    assert handbook.documents["awards.md"].title == "Awards"
    for cited in result.citations:
        assert HANDBOOK[cited.start:cited.end] == cited.text  # the citation keeps the markup


def test_an_undefined_abbreviation_matches_its_spelled_out_form(
        handbook: SearchIndex, fake_encoder: FakeEncoder) -> None:
    question = "Who do I ask, the CEO?"
    vector = fake_encoder.encode_queries([question])[0]
    terms = lexical.terms(question)
    hits = retrieve(handbook, vector, terms, 3)
    with_abbreviation = score_sentences(handbook, vector, terms, hits,
                                        wanted(question, handbook.acronyms))
    without = score_sentences(handbook, vector, terms, hits)
    leave = next(s for s in with_abbreviation if "Chief Executive" in HANDBOOK[s.start:s.end])
    before = next(s for s in without if s.start == leave.start)
    assert leave.coverage > before.coverage


def test_the_sentence_that_gives_the_wanted_kind_wins(handbook: SearchIndex,
                                                      fake_encoder: FakeEncoder) -> None:
    question = "How much is the Level 5 award?"
    vector = fake_encoder.encode_queries([question])[0]
    terms = lexical.terms(question)
    hits = retrieve(handbook, vector, terms, 3)
    typed = score_sentences(handbook, vector, terms, hits, wanted(question))
    best = HANDBOOK[typed[0].start:typed[0].end]
    assert typed[0].typed and "3.85%" in best


LEAVE = """## Leave

Staff may take Paid Parental Leave (PPL) after a birth or an adoption.
You must return to work for twelve weeks after your PPL ends.
Family leave is unpaid but protects your job.
"""


def test_abbreviated_and_negated_forms_count_as_the_question_terms(
        tmp_path: Path, fake_encoder: FakeEncoder) -> None:
    index = _one_file_index(tmp_path, fake_encoder, "leave.md", LEAVE)

    def coverage_of(question: str, phrase: str) -> tuple[float, float]:
        vector = fake_encoder.encode_queries([question])[0]
        terms = lexical.terms(question)
        hits = retrieve(index, vector, terms, 3)
        bridged = score_sentences(index, vector, terms, hits, wanted(question, index.acronyms))
        plain = score_sentences(index, vector, terms, hits)
        with_, without = (next(s.coverage for s in scored if phrase in LEAVE[s.start:s.end])
                          for scored in (bridged, plain))
        return with_, without

    # "paid parental leave" in the question is present where the sentence says "PPL".
    with_, without = coverage_of("After paid parental leave, how long must I work?", "return")
    assert with_ > without + 0.3
    # "paid?" is answered by "unpaid" (with or without the question's wants).
    assert coverage_of("Is family leave paid?", "unpaid") == pytest.approx((1.0, 1.0))
    # ... and "unpaid?" by "paid" (the sentence may say "not paid").
    assert coverage_of("Is parental leave unpaid?", "Staff may") == pytest.approx((1.0, 1.0))


POINTERS = """## Transit

See the transit subsidy page.
Your supervisor approves the transit subsidy application.

## Incidents

To report an incident, follow the steps below:

- Email the security team within one hour of the incident.
"""


def test_sentences_that_only_lead_elsewhere_score_lower(
        tmp_path: Path, fake_encoder: FakeEncoder) -> None:
    index = _one_file_index(tmp_path, fake_encoder, "p.md", POINTERS)
    question = "transit subsidy application incident steps"
    vector = fake_encoder.encode_queries([question])[0]
    terms = lexical.terms(question)
    hits = retrieve(index, vector, terms, 3)
    w_cos, w_cov, w_hit = answer_module.SENTENCE_WEIGHTS
    lead_ins = {"See the transit subsidy page.", "To report an incident, follow the steps below:"}
    seen = set()
    for s in score_sentences(index, vector, terms, hits):
        text = POINTERS[s.start:s.end]
        plain = w_cos * s.cosine + w_cov * s.coverage + w_hit * hits[s.hit].score
        penalty = answer_module.LEAD_IN_PENALTY if text in lead_ins else 0.0
        assert s.score == pytest.approx(plain - penalty), text
        seen.add(text)
    assert lead_ins <= seen and len(seen) == 4


def test_an_abbreviation_found_spelled_out_marks_only_itself_present(
        tmp_path: Path, fake_encoder: FakeEncoder) -> None:
    text = "## Budgets\n\nThe Chief Executive Officer approves every budget.\n"
    index = _one_file_index(tmp_path, fake_encoder, "b.md", text)
    # "CEO" and "zebra" occur in no sentence; the spelled-out CEO must not bring zebra along.
    question = "Does the CEO approve zebra budgets?"
    vector = fake_encoder.encode_queries([question])[0]
    terms = lexical.terms(question)
    scored = score_sentences(index, vector, terms, retrieve(index, vector, terms, 3),
                             wanted(question, index.acronyms))
    best = next(s for s in scored if "Chief Executive" in text[s.start:s.end])
    zebra = index.lexical.term_idf("zebra")
    total = sum(index.lexical.term_idf(t) for t in set(terms))
    assert best.coverage == pytest.approx(1.0 - zebra / total)


def test_a_sentence_without_words_is_scored_like_any_other(tmp_path: Path,
                                                          fake_encoder: FakeEncoder) -> None:
    # A line of only symbols is a "sentence" with no words; a "how do I" question once raised
    # on it (the answer kind paired each word with the next, and there were none).
    index = _one_file_index(tmp_path, fake_encoder, "notes.txt",
                            "Sharing the plan\n\nShare the plan through a roadmap.\n\n"
                            "— — —\n\nThe roadmap is updated monthly.\n")
    chunk = index.chunks[0]
    view = index.views[chunk.doc_id]
    assert any(not re.search(r"\w", view[s:e]) for s, e in chunk.sentences)
    question = "how do I share the plan?"
    vector = fake_encoder.encode_queries([question])[0]
    terms = lexical.terms(question)
    answer = compose_answer(index, vector, terms, retrieve(index, vector, terms, 3),
                            wanted(question))
    assert "through a roadmap" in answer.text


def test_passages_are_reranked_by_their_best_sentence() -> None:
    hits = [Hit(10, 0.9, 0.5, 3.0), Hit(11, 0.8, 0.5, 3.0), Hit(12, 0.7, 0.5, 3.0)]

    def said(hit: int, position: int, score: float) -> ScoredSentence:
        return ScoredSentence(hit, position, 0, 1, score, 0.5, 0.5)

    # Best first, as score_sentences returns them: the second passage holds the best sentence.
    sentences = [said(1, 0, 0.6), said(0, 2, 0.3), said(1, 1, 0.25), said(2, 0, 0.2)]
    kept, renumbered = rerank(hits, sentences, 2)
    # 0.8 + 0.6 beats 0.9 + 0.3; the third passage (0.7 + 0.2) is no longer read.
    assert [h.chunk for h in kept] == [11, 10]
    assert [(s.hit, s.position) for s in renumbered] == [(0, 0), (1, 2), (0, 1)]
    # A passage none of whose sentences was scored keeps its fused score alone.
    assert [h.chunk for h in rerank(hits, sentences[:1], 3)[0]] == [11, 10, 12]


def test_an_answer_reads_more_passages_than_it_cites(index: SearchIndex,
                                                     fake_encoder: FakeEncoder,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from service.qa import engine

    asked: list[int] = []

    def recording(index: SearchIndex, vector: np.ndarray, terms: list[str], k: int) -> list[Hit]:
        asked.append(k)
        return retrieve(index, vector, terms, k)

    monkeypatch.setattr(engine, "retrieve", recording)
    snapshot = engine.Snapshot(index, fake_encoder)
    answer = snapshot.ask("Who manages the budget?", 1)
    assert asked == [engine.RERANK_POOL] and len(answer.citations) == 1
    snapshot.ask("Who manages the budget?", 10)
    assert asked[-1] == 10 + engine.ANSWER_POOL

"""Insights: grouping questions by meaning, the per-day figures (on SQLite and PostgreSQL),
and CSV that stays text."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from service.index.encoder import ModelInfo, OnnxEncoder
from service.ingest.corpus import Document
from service.settings import Settings
from service.usage.insights import Corpus, compute, group_questions, to_csv
from service.usage.records import DAY, AnswerRecord, Store

PARAPHRASES = [
    ["How do I reset my password?", "I forgot my password, how can I change it?",
     "How do I reset my password?"],
    ["How many vacation days do I get?", "How many days of vacation do I get per year?"],
]
# Each shares words or a topic with one of the above, or with one another, and asks another
# thing.
UNRELATED = ["How do I change my username?", "How many sick days do I get?",
             "When is the office closed for holidays?", "When is the office open on weekends?"]


@pytest.fixture(scope="module")
def encode(real_encoder_dir: Path, real_model: ModelInfo) -> OnnxEncoder:
    return OnnxEncoder(real_encoder_dir, real_model, 1)


def _with_vectors(encoder: OnnxEncoder | None,
                  questions: Sequence[str]) -> list[tuple[str, bytes | None]]:
    """Each question with its vector as the recorder stores it (float16), as the answer path
    encodes it: one query at a time."""
    if encoder is None:
        return [(q, None) for q in questions]
    return [(q, np.asarray(encoder.encode_queries([q])[0], np.float16).tobytes())
            for q in questions]


def test_paraphrases_are_one_group_by_meaning(encode: OnnxEncoder) -> None:
    asked = [q for group in PARAPHRASES for q in group] + UNRELATED
    groups = group_questions(_with_vectors(encode, asked))
    assert [(g.count, g.variants) for g in groups] == [(3, 2), (2, 2), (1, 1), (1, 1), (1, 1),
                                                        (1, 1)]
    assert groups[0].example == "How do I reset my password?"  # the most asked wording
    assert sorted(g.example for g in groups[2:]) == sorted(UNRELATED)
    # By their words alone the paraphrases stay apart: their content words differ.
    by_words = group_questions(_with_vectors(None, asked))
    assert len(by_words) == 8


def test_questions_sharing_a_topic_word_are_not_merged(encode: OnnxEncoder) -> None:
    groups = group_questions(_with_vectors(encode, [
        "How do I renew the travel card?", "How do I reset the travel card?",
        "How do I renew my parking permit?", "How do I renew my passport?"]))
    assert [g.count for g in groups] == [1, 1, 1, 1]


def test_without_vectors_equal_content_words_are_one_group() -> None:
    groups = group_questions(_with_vectors(None, [
        "How do I renew my parking permit?", "how do i renew my parking permit",
        "How can I renew the parking permit?", "Renewing parking permits",
        "Where is the cafeteria?", "Where's the cafeteria", "What is the wifi password?"]))
    assert [(g.count, g.variants) for g in groups] == [(4, 4), (2, 2), (1, 1)]
    assert groups[0].example == "Renewing parking permits"  # the shortest of the most common
    assert groups[2].example == "What is the wifi password?"


def test_grouping_is_bounded_on_many_distinct_questions() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((5000, 384)).astype(np.float16)
    started = time.perf_counter()
    groups = group_questions((f"question number {i} about topic {i % 97}", vectors[i].tobytes())
                             for i in range(5000))
    assert len(groups) == 10 and time.perf_counter() - started < 10


def test_vectors_of_another_size_are_grouped_by_words_only(encode: OnnxEncoder) -> None:
    asked = _with_vectors(encode, PARAPHRASES[1])
    # The same paraphrase with a vector of another model (another size): not compared.
    other = ("How many vacation days do I get, please?", b"\x00\x3c" * 8)
    groups = group_questions([*asked, other])
    assert [(g.count, g.example) for g in groups] == [
        (2, "How many vacation days do I get?"), (1, other[0])]


def _record(at: float, answered: bool, latency: float, docs: tuple[str, ...],
            question: tuple[str, bytes | None] = ("", None)) -> AnswerRecord:
    return AnswerRecord(uuid.uuid4().hex, at, "default", "v1", "ask", answered, 0.5, latency,
                        docs, tuple((d, 0, 4) for d in docs[:1]), question[0] or None,
                        question[1])


def test_per_day_figures_and_documents(store_settings: Settings) -> None:
    store = Store.open(store_settings)
    now = (int(time.time() // DAY) + 0.5) * DAY  # midday today, UTC
    store.write_answers([_record(now, True, 10.0, ("a.txt",)), _record(now, True, 30.0, ("a.txt",)),
                         _record(now, False, 20.0, ()),
                         _record(now - DAY, True, 5.0, ("b.txt",)),
                         _record(now - 10 * DAY, True, 5.0, ("c.txt",))])
    corpus = Corpus("v1", {d: Document(d, d.upper(), "text of " + d)
                           for d in ("a.txt", "b.txt", "c.txt", "d.txt")})
    report = compute(store, corpus, collection="default", days=7, questions_stored=False,
                     cutoff=0.0, now=now)
    assert [d.questions for d in report.per_day] == [0, 0, 0, 0, 0, 1, 3]
    today = report.per_day[-1]
    assert (today.answered, today.declined, today.p50_ms) == (2, 1, 20.0)
    assert report.answered_share == 0.75 and report.helpful_share is None
    assert [(c.doc_id, c.title, c.count) for c in report.most_cited] == [
        ("a.txt", "A.TXT", 2), ("b.txt", "B.TXT", 1)]
    assert report.never_cited == ["c.txt", "d.txt"]  # c.txt was cited before the period
    assert report.unanswered == []  # no question text stored
    assert to_csv(report, "days").splitlines()[-1].startswith(f"{today.day},3,2,1,0,0,20.0,")
    # Retention bounds the period: nothing older than the cutoff counts.
    later = compute(store, corpus, collection="default", days=7, questions_stored=False,
                    cutoff=now - DAY / 2, now=now)
    assert later.questions == 3
    store.close()


def test_unanswered_questions_are_grouped_from_the_stored_vectors(
        store_settings: Settings, encode: OnnxEncoder) -> None:
    store = Store.open(store_settings)
    now = time.time()
    asked = _with_vectors(encode, [*PARAPHRASES[1], UNRELATED[0]])
    store.write_answers([_record(now, False, 5.0, (), q) for q in asked])
    report = compute(store, Corpus("v1", {}), collection="default", days=1,
                     questions_stored=True, cutoff=0.0, now=now)
    assert [(g.count, g.example) for g in report.unanswered] == [
        (2, "How many vacation days do I get?"), (1, UNRELATED[0])]
    store.close()

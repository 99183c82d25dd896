"""Insights: grouping questions by meaning, the per-day figures, and CSV that stays text."""

from __future__ import annotations

import time
import uuid

from service.corpus import Document
from service.insights import Corpus, compute, group_questions, to_csv
from service.records import DAY, AnswerRecord, Store
from service.settings import Settings


def test_near_identical_questions_are_one_group() -> None:
    groups = group_questions([
        "How do I renew my parking permit?", "how do i renew my parking permit",
        "How can I renew the parking permit?", "Renewing parking permits",
        "Where is the cafeteria?", "Where's the cafeteria", "What is the wifi password?"])
    assert [(g.count, g.variants) for g in groups] == [(4, 4), (2, 2), (1, 1)]
    assert groups[0].example == "Renewing parking permits"  # the shortest of the most common
    assert groups[2].example == "What is the wifi password?"


def test_questions_sharing_a_word_are_not_merged() -> None:
    groups = group_questions(["How do I renew my parking permit?",
                              "How do I renew my passport?", "Where do I park my bike?"])
    assert [g.count for g in groups] == [1, 1, 1]


def test_grouping_is_bounded_on_many_distinct_questions() -> None:
    started = time.perf_counter()
    groups = group_questions(f"question number {i} about topic {i % 97}" for i in range(5000))
    assert len(groups) == 10 and time.perf_counter() - started < 10


def _record(at: float, answered: bool, latency: float, docs: tuple[str, ...]) -> AnswerRecord:
    return AnswerRecord(uuid.uuid4().hex, at, "default", "v1", "ask", answered, 0.5, latency,
                        docs, tuple((d, 0, 4) for d in docs[:1]), None)


def test_per_day_figures_and_documents(fake_settings: Settings) -> None:
    store = Store.open(fake_settings)
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

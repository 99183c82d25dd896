"""The recorder: never blocks the request, drops with a counter, survives a failing store
(on SQLite and on PostgreSQL)."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import sqlalchemy as sa

from service.qa.answer import Answer, Citation
from service.settings import Settings
from service.usage.recorder import Recorder, to_record
from service.usage.records import Store, answers

ANSWER = Answer("It is red. [1]", True, 0.42, (
    Citation(1, "a.txt", "A", "", 0, 10, "It is red.", 0.9, ((0, 10),)),
    Citation(2, "b.txt", "B", "", 5, 20, "Something else.", 0.5, ()),
    Citation(3, "a.txt", "A", "", 30, 40, "More of a.", 0.4, ())))


def test_a_record_holds_what_the_store_keeps_and_no_question() -> None:
    recorder = Recorder(lambda: pytest.fail("not opened"), backend="sqlite", capacity=16,
                        retention_days=30, store_questions=False)
    answer_id = recorder.record("ask", "v1", ANSWER, "Is it red?", 1.5)
    pending = recorder._queue.get_nowait()
    assert pending is not None and pending.id == answer_id and pending.question is None
    record = to_record(pending)
    assert record.cited == ("a.txt", "b.txt") and record.quoted == (("a.txt", 0, 10),)
    assert (record.answered, record.confidence, record.latency_ms) == (True, 0.42, 1.5)


def test_the_question_vector_and_user_are_kept_only_when_the_settings_say_so() -> None:
    vector = np.linspace(-1, 1, 8, dtype=np.float32)
    answer = replace(ANSWER, query_vector=vector, answered=False)
    kept = []
    for questions, users in ((False, False), (True, False), (True, True), (False, True)):
        recorder = Recorder(lambda: pytest.fail("not opened"), backend="sqlite", capacity=16,
                            retention_days=30, store_questions=questions, store_users=users)
        recorder.record("ask", "v1", answer, "Is it red?", 1.5, "alice")
        pending = recorder._queue.get_nowait()
        assert pending is not None
        record = to_record(pending)
        kept.append((record.question, record.user, record.question_vector))
    half = vector.astype(np.float16).tobytes()
    assert kept == [(None, None, None), ("Is it red?", None, half),
                    ("Is it red?", "alice", half), (None, "alice", None)]
    # An answered question's vector is not kept: only unanswered ones are grouped.
    recorder = Recorder(lambda: pytest.fail("not opened"), backend="sqlite", capacity=16,
                        retention_days=30, store_questions=True)
    recorder.record("ask", "v1", replace(answer, answered=True), "Is it red?", 1.5)
    pending = recorder._queue.get_nowait()
    assert pending is not None and to_record(pending).question_vector is None


def test_full_queue_drops_and_counts(store_settings: Settings) -> None:
    recorder = Recorder(lambda: Store.open(store_settings), backend="sqlite", capacity=16,
                        retention_days=30, store_questions=True)
    for i in range(20):  # the writer is not started: nothing drains
        recorder.record("ask", "v1", ANSWER, f"q{i}", 1.0)
    assert (recorder.queued, recorder.dropped_full) == (16, 4)
    recorder.start()
    assert recorder.flush(10)
    assert recorder.written == 16 and recorder.status() == "ok"
    store = recorder.store
    assert store is not None
    assert len(store.query(sa.select(answers.c.id))) == 16
    recorder.stop()


def test_a_failing_store_drops_the_batch_and_recovers(store_settings: Settings) -> None:
    recorder = Recorder(lambda: Store.open(store_settings), backend="sqlite", capacity=100,
                        retention_days=30, store_questions=False)
    recorder.start()
    deadline = time.monotonic() + 10
    while recorder.status() == "starting" and time.monotonic() < deadline:
        time.sleep(0.01)
    store = recorder.store
    assert store is not None
    with store.engine.begin() as conn:  # make every write fail, as a broken store would
        conn.execute(sa.text("ALTER TABLE qa_answers RENAME TO qa_answers_moved"))
    recorder.record("ask", "v1", ANSWER, "q", 1.0)
    assert recorder.flush(10)
    assert recorder.dropped_error == 1 and recorder.status() == "failing"
    assert "qa_answers" in (recorder.error or "")
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE qa_answers_moved RENAME TO qa_answers"))
    recorder.record("ask", "v1", ANSWER, "q", 1.0)
    assert recorder.flush(10)
    assert recorder.written == 1 and recorder.status() == "ok"
    recorder.stop()


def test_retention_sweep_runs_at_start(store_settings: Settings) -> None:
    store = Store.open(store_settings)
    recorder = Recorder(lambda: Store.open(store_settings), backend="sqlite", capacity=16,
                        retention_days=1, store_questions=False)
    recorder.record("ask", "v1", ANSWER, "q", 1.0)
    old = to_record(recorder._queue.get_nowait())  # type: ignore[arg-type]
    store.write_answers([old.__class__(**{**old.__dict__, "at": time.time() - 2 * 86_400})])
    recorder.start()
    deadline = time.monotonic() + 10
    while store.query(sa.select(answers.c.id)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.query(sa.select(answers.c.id)) == []
    recorder.stop()
    store.close()

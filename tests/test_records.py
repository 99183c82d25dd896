"""The answer store on SQLite and on PostgreSQL: migrations, writes, votes, retention."""

from __future__ import annotations

import threading
import time
import uuid

import sqlalchemy as sa

from service.settings import Settings
from service.usage.records import AnswerRecord, Store, answer_docs, answers, database_url, feedback


def record(at: float | None = None, *, answered: bool = True, question: str | None = None,
           docs: tuple[str, ...] = ("a.txt", "b.txt")) -> AnswerRecord:
    return AnswerRecord(uuid.uuid4().hex, time.time() if at is None else at, "default", "v1",
                        "ask", answered, 0.5, 3.2, docs, ((docs[0], 10, 90),) if docs else (),
                        question)


def test_migrations_run_once_and_concurrently(store_settings: Settings) -> None:
    stores = [Store(database_url(store_settings)) for _ in range(3)]
    errors: list[BaseException] = []

    def migrate(store: Store) -> None:
        try:
            store.migrate()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {s.schema_version() for s in stores} == {"0002"}
    stores[0].migrate()  # at head already: nothing to do
    for s in stores:
        s.close()


def test_answers_and_votes(store_settings: Settings) -> None:
    store = Store.open(store_settings)
    first, second = record(question="Where is the ledger?"), record(answered=False, docs=())
    store.write_answers([first, second])
    rows = {r.id: r for r in store.query(sa.select(answers))}
    assert rows[first.id].question == "Where is the ledger?"
    assert rows[first.id].cited == '["a.txt","b.txt"]'
    assert rows[first.id].quoted == '[["a.txt",10,90]]'
    assert rows[second.id].answered is False
    assert sorted(r.doc_id for r in store.query(sa.select(answer_docs))) == ["a.txt", "b.txt"]

    now = time.time()
    assert store.set_feedback(first.id, True, None, now, since=0)
    assert store.set_feedback(first.id, False, "wrong section", now + 1, since=0)  # changed
    assert not store.set_feedback(uuid.uuid4().hex, True, None, now, since=0)  # unknown
    assert not store.set_feedback(second.id, True, None, now, since=time.time() + 60)  # expired
    votes = store.query(sa.select(feedback.c.answer_id, feedback.c.helpful, feedback.c.comment))
    assert [tuple(v) for v in votes] == [(first.id, False, "wrong section")]
    store.close()


def test_retention_deletes_answers_their_documents_and_votes(store_settings: Settings) -> None:
    store = Store.open(store_settings)
    old, new = record(at=time.time() - 40 * 86_400), record()
    store.write_answers([old, new])
    assert store.set_feedback(old.id, False, "old", time.time(), since=0)
    assert store.set_feedback(new.id, True, None, time.time(), since=0)
    assert store.delete_before(time.time() - 30 * 86_400) == 1
    assert [r.id for r in store.query(sa.select(answers.c.id))] == [new.id]
    assert {r.answer_id for r in store.query(sa.select(answer_docs.c.answer_id))} == {new.id}
    assert [r.answer_id for r in store.query(sa.select(feedback.c.answer_id))] == [new.id]
    store.close()


def test_sqlite_is_in_wal_mode_in_the_data_folder(fake_settings: Settings) -> None:
    store = Store.open(fake_settings)
    assert store.path == fake_settings.data_dir.resolve() / "qa.sqlite3"
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
    store.close()


def test_a_plain_postgresql_url_uses_psycopg_3() -> None:
    settings = Settings(database_url="postgresql://u:p@db.example:5432/qa")  # type: ignore[arg-type]
    assert database_url(settings) == "postgresql+psycopg://u:p@db.example:5432/qa"

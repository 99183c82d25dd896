"""The answer and feedback store: one schema on SQLite (WAL) or PostgreSQL, migrated at start."""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from service.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "qa_schema_version"
# Any fixed number: PostgreSQL advisory locks are keyed by integers; this one guards migrations.
MIGRATION_LOCK = 0x71615F6D6967
DAY = 86_400.0

metadata = sa.MetaData()
answers = sa.Table(
    "qa_answers", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("day", sa.Integer, nullable=False),
    sa.Column("collection", sa.String(64), nullable=False),
    sa.Column("index_version", sa.String(64), nullable=False),
    sa.Column("route", sa.String(8), nullable=False),
    sa.Column("answered", sa.Boolean, nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("cited", sa.Text, nullable=False),
    sa.Column("quoted", sa.Text, nullable=False),
    sa.Column("question", sa.Text, nullable=True),
    sa.Column("question_vector", sa.LargeBinary, nullable=True),
    sa.Column("user_name", sa.String(200), nullable=True),
)
answer_docs = sa.Table(
    "qa_answer_docs", metadata,
    sa.Column("answer_id", sa.String(32), primary_key=True),
    sa.Column("doc_id", sa.Text, primary_key=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("collection", sa.String(64), nullable=False),
    sa.Column("answered", sa.Boolean, nullable=False),
)
feedback = sa.Table(
    "qa_feedback", metadata,
    sa.Column("answer_id", sa.String(32), primary_key=True),
    sa.Column("answer_at", sa.Float, nullable=False),
    sa.Column("collection", sa.String(64), nullable=False),
    sa.Column("helpful", sa.Boolean, nullable=False),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Column("at", sa.Float, nullable=False),
)


@dataclass(frozen=True)
class AnswerRecord:
    """One answer as stored: no question text unless the settings allow it, never a client."""

    id: str
    at: float
    collection: str
    index_version: str
    route: str
    answered: bool
    confidence: float
    latency_ms: float
    cited: tuple[str, ...]  # documents of the citations, unique, in citation order
    quoted: tuple[tuple[str, int, int], ...]  # the passages the answer quotes
    question: str | None
    # The question's vector (float16 bytes), kept only beside its text (QA_STORE_QUESTIONS).
    question_vector: bytes | None = None
    user: str | None = None  # the verified user, only with QA_STORE_USERS


class StoreError(Exception):
    """The store cannot be reached or written; the message is safe to show."""


def database_url(settings: Settings) -> str:
    """The SQLAlchemy URL: QA_DATABASE_URL, else a SQLite file in QA_DATA_DIR."""
    if settings.database_url is not None:
        url = settings.database_url.get_secret_value()
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        return url
    return f"sqlite:///{settings.data_dir.resolve() / 'qa.sqlite3'}"


def describe(exc: BaseException) -> str:
    """A short reason without the statement, parameters or connection string."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:300]


class Store:
    """Writes answers and feedback, deletes what is past retention, and answers insights
    queries. Thread-safe: every call takes its own pooled connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.backend = "postgresql" if url.startswith("postgresql") else "sqlite"
        if self.backend == "sqlite":
            path = Path(url.removeprefix("sqlite:///"))
            path.parent.mkdir(parents=True, exist_ok=True)
            self.path: Path | None = path
            self.engine: Engine = sa.create_engine(
                url, connect_args={"timeout": 10, "check_same_thread": False})
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.path = None
            self.engine = sa.create_engine(url, pool_pre_ping=True, pool_size=4,
                                           connect_args={"connect_timeout": 3})

    @classmethod
    def open(cls, settings: Settings) -> Store:
        store = cls(database_url(settings))
        store.migrate()
        return store

    def close(self) -> None:
        self.engine.dispose()

    def migrate(self) -> None:
        """Bring the schema to the newest migration. Several processes may start at once:
        SQLite serialises them with a file lock, PostgreSQL with an advisory lock."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._migration_lock(), self.engine.begin() as conn:
            if self.backend == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        with open(self.path.parent / (self.path.name + ".migrate-lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def schema_version(self) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).first()
        return None if row is None else str(row[0])

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def write_answers(self, records: Sequence[AnswerRecord]) -> None:
        """One transaction for a batch: the writer thread calls this with what it drained."""
        if not records:
            return
        rows = [{"id": r.id, "at": r.at, "day": int(r.at // DAY), "collection": r.collection,
                 "index_version": r.index_version, "route": r.route, "answered": r.answered,
                 "confidence": r.confidence, "latency_ms": r.latency_ms,
                 "cited": orjson.dumps(r.cited).decode(),
                 "quoted": orjson.dumps(r.quoted).decode(), "question": r.question,
                 "question_vector": r.question_vector, "user_name": r.user}
                for r in records]
        docs = [{"answer_id": r.id, "doc_id": doc, "at": r.at, "collection": r.collection,
                 "answered": r.answered} for r in records for doc in r.cited]
        with self.engine.begin() as conn:
            conn.execute(answers.insert(), rows)
            if docs:
                conn.execute(answer_docs.insert(), docs)

    def answer_exists(self, answer_id: str, since: float) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(answers.c.id).where(
                answers.c.id == answer_id, answers.c.at >= since)).first()
        return row is not None

    def set_feedback(self, answer_id: str, helpful: bool, comment: str | None, now: float,
                     since: float) -> bool:
        """Record (or change) the vote on an answer recorded at or after `since`; False when
        there is no such answer. Returns only once the vote is committed."""
        source = sa.select(answers.c.id, answers.c.at, answers.c.collection,
                           sa.literal(helpful, sa.Boolean),
                           sa.literal(comment, sa.Text), sa.literal(now, sa.Float)).where(
            answers.c.id == answer_id, answers.c.at >= since)
        insert = (postgresql.insert(feedback) if self.backend == "postgresql"
                  else sqlite.insert(feedback))
        statement = insert.from_select(
            ["answer_id", "answer_at", "collection", "helpful", "comment", "at"], source)
        upsert = statement.on_conflict_do_update(
            index_elements=[feedback.c.answer_id],
            set_={"helpful": statement.excluded.helpful, "comment": statement.excluded.comment,
                  "at": statement.excluded.at}).returning(feedback.c.answer_id)
        # RETURNING, not rowcount: drivers disagree on rowcount for INSERT ... SELECT.
        with self.engine.begin() as conn:
            stored = conn.execute(upsert).first()
        return stored is not None

    def delete_before(self, cutoff: float) -> int:
        """Drop answers, their document rows and their feedback recorded before `cutoff`."""
        with self.engine.begin() as conn:
            conn.execute(feedback.delete().where(feedback.c.answer_at < cutoff))
            conn.execute(answer_docs.delete().where(answer_docs.c.at < cutoff))
            deleted = conn.execute(answers.delete().where(answers.c.at < cutoff)).rowcount
        return int(deleted or 0)

    def query(self, statement: sa.Executable) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(statement).all())

    def rows(self, statement: sa.Executable) -> list[tuple[Any, ...]]:
        """Plain tuples from the driver, for the insights' large reads: building SQLAlchemy
        rows for 100,000 answers costs more than the query. Booleans may come back as 0/1."""
        with self.engine.connect() as conn:
            result = conn.execute(statement)
            return list(result.cursor.fetchall()) if result.cursor is not None else []


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (insights) run beside the writer; FULL makes a commit durable before
    # the feedback route acknowledges it; the busy timeout lets several processes share it.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def migrate_connection(conn: Connection) -> None:
    """Used by the migrations' env.py: run the scripts on the connection given."""
    from alembic import context

    context.configure(connection=conn, version_table=VERSION_TABLE,
                      render_as_batch=conn.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()

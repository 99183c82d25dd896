"""Answers, the documents they cite, and feedback on them."""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "qa_answers",
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
    )
    # Covering indexes: the insights read these columns of a period without touching the rows.
    op.create_index("qa_answers_period", "qa_answers",
                    ["collection", "at", "day", "answered", "latency_ms"])
    op.create_table(
        "qa_answer_docs",
        sa.Column("answer_id", sa.String(32), primary_key=True),
        sa.Column("doc_id", sa.Text, primary_key=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("answered", sa.Boolean, nullable=False),
    )
    op.create_index("qa_answer_docs_period", "qa_answer_docs",
                    ["collection", "at", "answered", "doc_id"])
    op.create_table(
        "qa_feedback",
        sa.Column("answer_id", sa.String(32), primary_key=True),
        sa.Column("answer_at", sa.Float, nullable=False),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("helpful", sa.Boolean, nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("qa_feedback_answer_at", "qa_feedback", ["answer_at"])
    op.create_index("qa_feedback_period", "qa_feedback",
                    ["collection", "answer_at", "helpful", "answer_id"])


def downgrade() -> None:
    op.drop_table("qa_feedback")
    op.drop_table("qa_answer_docs")
    op.drop_table("qa_answers")

"""The question's vector (for grouping questions by meaning) and the verified user, both
stored only when the settings say so."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    with op.batch_alter_table("qa_answers") as batch:
        batch.add_column(sa.Column("question_vector", sa.LargeBinary, nullable=True))
        batch.add_column(sa.Column("user_name", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("qa_answers") as batch:
        batch.drop_column("user_name")
        batch.drop_column("question_vector")

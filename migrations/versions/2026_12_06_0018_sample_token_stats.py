"""samples.token_entropies and samples.token_self_certainties: each step's next-token entropy and self-certainty under
the sampling policy, recorded from the logits it sampled with (the hf engine), the inputs of the intrinsic signals
(entropy minimization, Intuitor's self-certainty) at no second model call; and eval_items.majority_answer, the
majority of an item's k sampled answers, from which the label-free gate's self_consistency is read.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

COLUMNS = ("token_entropies", "token_self_certainties")


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column("samples", sa.Column(column, sa.JSON().with_variant(JSONB(), "postgresql"), nullable=True))
    op.add_column("eval_items", sa.Column("majority_answer", sa.Text(), nullable=True))


def downgrade() -> None:
    # SQLite drops the column in place (3.35+): a batch table copy would trip over the views on samples.
    for table, column in (*(("samples", c) for c in COLUMNS), ("eval_items", "majority_answer")):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        else:
            op.drop_column(table, column)

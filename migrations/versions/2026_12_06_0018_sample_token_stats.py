"""samples.token_entropies and samples.token_self_certainties: each step's next-token entropy and self-certainty under
the sampling policy, recorded from the logits it sampled with (the hf engine), the inputs of the intrinsic signals
(entropy minimization, Intuitor's self-certainty) at no second model call.

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


def downgrade() -> None:
    # SQLite drops the column in place (3.35+): a batch table copy would trip over the views on samples.
    for column in COLUMNS:
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE samples DROP COLUMN {column}")
        else:
            op.drop_column("samples", column)

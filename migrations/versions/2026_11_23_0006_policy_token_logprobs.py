"""samples.policy_token_logprobs: each sampled token's log-prob under the sampling policy at
temperature 1, recorded by the engine at no extra cost, so training need not run a reference
forward pass over samples of its own starting policy

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("samples", sa.Column("policy_token_logprobs", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=True))


def downgrade() -> None:
    # SQLite drops the column in place (3.35+): a batch table copy would trip over the views on samples.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE samples DROP COLUMN policy_token_logprobs")
    else:
        op.drop_column("samples", "policy_token_logprobs")

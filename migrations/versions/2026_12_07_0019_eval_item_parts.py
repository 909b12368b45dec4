"""eval_items.parts: each held-out answer's per-part verdicts (instruction following: one per constraint), graded once
by the suite's family when the answer is stored, which the instruction-level accuracy reads instead of grading every
response again. Rows stored before have none; they are graded where they are read.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("eval_items", sa.Column("parts", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":  # in place (3.35+), as 0018 does
        op.execute("ALTER TABLE eval_items DROP COLUMN parts")
    else:
        op.drop_column("eval_items", "parts")

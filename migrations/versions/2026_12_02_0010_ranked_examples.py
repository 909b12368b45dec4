"""example_candidates: ranked training examples (list-wise methods such as RRHF rank all K samples of a prompt).
One row per candidate of an example, its rank (0: best) and the score it was ranked by.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "example_candidates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("example_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["example_id"], ["examples.id"], name=op.f("fk_example_candidates_example_id_examples")),
        sa.ForeignKeyConstraint(["sample_id"], ["samples.id"], name=op.f("fk_example_candidates_sample_id_samples")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_example_candidates")),
        sa.UniqueConstraint("example_id", "rank", name=op.f("uq_example_candidates_example_id_rank")),
    )


def downgrade() -> None:
    op.drop_table("example_candidates")

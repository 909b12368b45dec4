"""curations: the curate phase's scores and decisions (data selection: IFD, DEITA, MoDS, the vote-share band, the
budget). One row per prompt and filter (kept or dropped, with the reason), and per-sample score rows.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "curations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("iteration_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("filter", sa.String(length=20), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("kept", sa.Boolean(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["iteration_id"], ["iterations.id"], name=op.f("fk_curations_iteration_id_iterations")),
        sa.ForeignKeyConstraint(["prompt_id"], ["prompts.id"], name=op.f("fk_curations_prompt_id_prompts")),
        sa.ForeignKeyConstraint(["sample_id"], ["samples.id"], name=op.f("fk_curations_sample_id_samples")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_curations")),
        sa.UniqueConstraint("iteration_id", "position", "prompt_id", "sample_id",
                            name=op.f("uq_curations_iteration_id_position_prompt_id_sample_id")),
    )
    op.create_index(op.f("ix_curations_prompt_id"), "curations", ["prompt_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_curations_prompt_id"), table_name="curations")
    op.drop_table("curations")

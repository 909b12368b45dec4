"""tracker_runs: each loop's MLflow / W&B run and how far the store has been sent to it;
phase_runs.progress_note: what a phase's progress counts (which policy, which suite);
prompts.parent_ids name self-instruct parents by natural key ('prompt:I.J'), not row id

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tracker_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("loop_id", sa.Integer(), nullable=False),
        sa.Column("backend", sa.String(length=20), nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("steps_logged", sa.Integer(), nullable=False),
        sa.Column("steps_through", sa.Integer(), nullable=False),
        sa.Column("iterations_logged", sa.Integer(), nullable=False),
        sa.Column("last_event_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["loop_id"], ["loops.id"], name=op.f("fk_tracker_runs_loop_id_loops")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracker_runs")),
        sa.UniqueConstraint("loop_id", "backend", name=op.f("uq_tracker_runs_loop_id_backend")),
    )


    with op.batch_alter_table("phase_runs") as batch:
        batch.add_column(sa.Column("progress_note", sa.String(length=200), nullable=True))
    _parents_by_natural_key()


def _parents_by_natural_key() -> None:
    """'prompt:<row id>' -> 'prompt:<iteration>.<item_index>'; keys that name no row ('prompt:new',
    written by a run that was not resumed) are kept as they are."""
    conn = op.get_bind()
    keys = {pid: f"prompt:{number}.{index}" for pid, number, index in conn.execute(sa.text(
        "SELECT p.id, i.number, p.item_index FROM prompts p JOIN iterations i ON i.id = p.iteration_id "
        "WHERE p.source = 'self_instruct'"))}
    table = sa.table("prompts", sa.column("id", sa.Integer), sa.column("parent_ids", sa.JSON))
    for pid, parents in conn.execute(sa.text("SELECT id, parent_ids FROM prompts WHERE parent_ids IS NOT NULL")):
        parents = json.loads(parents) if isinstance(parents, str) else parents
        renamed = [keys.get(int(k[7:]), k) if k.startswith("prompt:") and k[7:].isdigit() else k for k in parents]
        if renamed != parents:
            conn.execute(table.update().where(table.c.id == pid).values(parent_ids=renamed))


def downgrade() -> None:
    with op.batch_alter_table("phase_runs") as batch:
        batch.drop_column("progress_note")
    op.drop_table("tracker_runs")

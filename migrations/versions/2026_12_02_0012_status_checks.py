"""Status columns as enumerations the database checks: a CHECK constraint on each (loops, iterations, phase runs
and checkpoints' status, events' level, evals' and eval items' role, writer leases' kind), so a value no code
writes (a typo in a hand-made UPDATE) is refused rather than stored.

SQLite adds a constraint by copying the table; the copy is renamed into place with `legacy_alter_table`, which
leaves the views that name the table alone (selfloop.db.migrate switches foreign keys off for the copies and checks
them all before committing).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Frozen here: a later change to the models' lists comes with its own migration.
CHECKS = {
    "loops": ("status", ("ready", "paused", "finished", "failed")),
    "iterations": ("status", ("running", "done", "failed")),
    "phase_runs": ("status", ("running", "done", "failed", "interrupted")),
    "checkpoints": ("status", ("ok", "deleted")),
    "events": ("level", ("info", "warning", "error")),
    "evals": ("role", ("candidate", "baseline")),
    "eval_items": ("role", ("candidate", "baseline")),
    "writer_leases": ("kind", ("daemon", "run", "track", "rm", "rename", "none")),
}


def _alter(change) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("PRAGMA legacy_alter_table = ON")
    try:
        for table, (column, values) in CHECKS.items():
            with op.batch_alter_table(table, recreate="always" if sqlite else "auto") as batch:
                change(batch, table, column, values)
    finally:
        if sqlite:
            op.execute("PRAGMA legacy_alter_table = OFF")


def upgrade() -> None:
    _alter(lambda batch, table, column, values: batch.create_check_constraint(
        op.f(f"ck_{table}_{column}"), f"{column} IN ({', '.join(repr(v) for v in values)})"))


def downgrade() -> None:
    _alter(lambda batch, table, column, values: batch.drop_constraint(op.f(f"ck_{table}_{column}"), type_="check"))

"""examples.data: what an algorithm keeps on its examples beyond the shared columns, as JSON its spec's `data` model
validates (a plug-in's own fields need no migration); CUT's and CoIN's second prompt (examples.context) moves there
as {"context": ...} and the column goes.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

import json

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _drop(table: str, column: str) -> None:
    if op.get_bind().dialect.name == "sqlite":  # in place (3.35+): no index or view names the column
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    else:
        op.drop_column(table, column)


def upgrade() -> None:
    op.add_column("examples", sa.Column("data", JSON, nullable=True))
    examples = sa.table("examples", sa.column("id", sa.Integer), sa.column("context", sa.Text), sa.column("data", JSON))
    bind = op.get_bind()
    moved = [{"i": i, "d": json.dumps({"context": c})} for i, c in bind.execute(
        sa.select(examples.c.id, examples.c.context).where(examples.c.context.is_not(None)))]
    if moved:
        cast = "CAST(:d AS JSONB)" if bind.dialect.name == "postgresql" else ":d"
        bind.execute(sa.text(f"UPDATE examples SET data = {cast} WHERE id = :i"), moved)
    _drop("examples", "context")


def downgrade() -> None:
    op.add_column("examples", sa.Column("context", sa.Text(), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, data FROM examples WHERE data IS NOT NULL")).all()
    back = []
    for i, data in rows:
        value = json.loads(data) if isinstance(data, str) else data
        if isinstance(value, dict) and value.get("context") is not None:
            back.append({"i": i, "c": value["context"]})
    if back:
        bind.execute(sa.text("UPDATE examples SET context = :c WHERE id = :i"), back)
    _drop("examples", "data")

"""Plug-in names of up to 40 characters (the registries allow 40; `examples.algorithm` and `curations.filter` held
20, so a longer plug-in failed on PostgreSQL), and no secret left in stored rows: the passwords and credentials that
configs stored before 2026-12-06 carried in `database.url`, `database.reader_url` and
`tracking.mlflow.tracking_uri` are stripped from `loops.config`, and masked in `events.message` (a tracker's failure
could name its URI).

The downgrade narrows the columns again; the stripped secrets are not put back (they were never meant to be there).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from selfloop.credentials import redact, strip

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

NAME_COLUMNS = (("examples", "algorithm"), ("curations", "filter"))
# Where a stored config keeps a URL: (section, ..., field).
URL_FIELDS = (("database", "url"), ("database", "reader_url"), ("tracking", "mlflow", "tracking_uri"))


def _widen(length: int, was: int) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:  # copies of the tables, renamed into place without touching the views that name them
        op.execute("PRAGMA legacy_alter_table = ON")
    try:
        for table, column in NAME_COLUMNS:
            with op.batch_alter_table(table) as batch:
                batch.alter_column(column, type_=sa.String(length=length), existing_type=sa.String(length=was),
                                   existing_nullable=False)
    finally:
        if sqlite:
            op.execute("PRAGMA legacy_alter_table = OFF")


def _stripped(config: dict) -> dict | None:
    """The config without the secrets of its URLs, or None when it had none."""
    changed = False
    for path in URL_FIELDS:
        node = config
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        value = node.get(path[-1]) if isinstance(node, dict) else None
        if isinstance(value, str) and strip(value) != value:
            node[path[-1]] = strip(value)
            changed = True
    return config if changed else None


def _strip_secrets() -> None:
    bind = op.get_bind()
    loops = sa.table("loops", sa.column("id", sa.Integer), sa.column("config", sa.JSON))
    for loop_id, config in bind.execute(sa.select(loops.c.id, loops.c.config)).all():
        stripped = _stripped(config) if isinstance(config, dict) else None
        if stripped is not None:
            bind.execute(loops.update().where(loops.c.id == loop_id).values(config=stripped))
    events = sa.table("events", sa.column("id", sa.Integer), sa.column("message", sa.Text))
    for event_id, message in bind.execute(sa.select(events.c.id, events.c.message)
                                          .where(events.c.message.like("%://%@%"))).all():
        if redact(message) != message:
            bind.execute(events.update().where(events.c.id == event_id).values(message=redact(message)))


def upgrade() -> None:
    _widen(40, 20)
    _strip_secrets()


def downgrade() -> None:
    _widen(20, 40)

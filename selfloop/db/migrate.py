"""Alembic wired to the migrations shipped inside the package (selfloop.migrations)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

if TYPE_CHECKING:
    from sqlalchemy import Connection


def alembic_config(engine: Engine | None = None, connection: Connection | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(files("selfloop.migrations")))
    # Date-prefixed revision files, e.g. 2026_11_21_0001_initial_schema.py
    cfg.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    cfg.attributes["connection"] = connection
    cfg.attributes["engine"] = engine
    return cfg


@cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = _script().get_current_head()
    if head is None:
        raise RuntimeError("the package ships no migrations")
    return head


def known_revisions() -> set[str]:
    return {rev.revision for rev in _script().walk_revisions()}


def upgrade(engine: Engine, revision: str = "head") -> None:
    _migrate(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    _migrate(engine, command.downgrade, revision)


def _migrate(engine: Engine, step: Callable[[AlembicConfig, str], None], revision: str) -> None:
    """Run an alembic step; a revision unknown to this selfloop (given, or the database's own) is a one-line SchemaError."""
    from alembic.util import CommandError

    from selfloop.errors import SchemaError

    try:
        with engine.connect() as conn, _foreign_keys_checked_at_the_end(conn), conn.begin():
            _serialise(conn)
            step(alembic_config(connection=conn), revision)
            _check_foreign_keys(conn)
    except CommandError as exc:
        raise SchemaError(f"cannot migrate to {revision!r}: {str(exc).splitlines()[0]} (this selfloop knows "
                          f"revisions up to {head_revision()}; a database from a newer selfloop needs that version)") from None


@contextmanager
def _foreign_keys_checked_at_the_end(conn: Connection) -> Iterator[None]:
    """SQLite changes a table's constraints by copying it, dropping the original and renaming the copy: its
    documented procedure switches foreign keys off meanwhile (they cannot be, inside a transaction) and checks them
    all before committing (`_check_foreign_keys`). PostgreSQL alters in place."""
    raw = conn.connection.dbapi_connection if conn.dialect.name == "sqlite" else None
    if raw is not None:
        raw.execute("PRAGMA foreign_keys = OFF")
    try:
        yield
    finally:
        if raw is not None:
            raw.execute("PRAGMA foreign_keys = ON")


def _check_foreign_keys(conn: Connection) -> None:
    if conn.dialect.name == "sqlite":
        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
        if broken:
            raise RuntimeError(f"the migration left rows whose foreign keys point nowhere: {broken[:5]}")


def _serialise(conn: Connection) -> None:
    """Two processes migrating (or creating) one database at once take turns: the second finds the
    first's schema when its turn comes. SQLite's writers already take turns (BEGIN IMMEDIATE)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('selfloop-schema'))")


def init_schema(engine: Engine) -> bool:
    """Bring an empty database to head, atomically with the check that it is empty (or already ours).
    False, and nothing done, when it holds tables that are not selfloop's."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import inspect

    with engine.connect() as conn, _foreign_keys_checked_at_the_end(conn), conn.begin():
        _serialise(conn)
        revision = MigrationContext.configure(conn).get_current_revision()
        if revision is None and inspect(conn).get_table_names():
            return False
        command.upgrade(alembic_config(connection=conn), "head")
        _check_foreign_keys(conn)
    return True

"""Alembic wired to the migrations shipped inside the package (selfloop.migrations)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import Engine


def alembic_config(engine: Engine | None = None, connection=None) -> AlembicConfig:  # noqa: ANN001
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
    assert head is not None, "the package ships no migrations"
    return head


def known_revisions() -> set[str]:
    return {rev.revision for rev in _script().walk_revisions()}


def upgrade(engine: Engine, revision: str = "head") -> None:
    _migrate(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    _migrate(engine, command.downgrade, revision)


def _migrate(engine: Engine, step, revision: str) -> None:  # noqa: ANN001
    """Run an alembic step; a revision unknown to this selfloop (given, or the database's own) is a one-line SchemaError."""
    from alembic.util import CommandError

    from selfloop.errors import SchemaError

    try:
        with engine.begin() as conn:
            _serialise(conn)
            step(alembic_config(connection=conn), revision)
    except CommandError as exc:
        raise SchemaError(f"cannot migrate to {revision!r}: {str(exc).splitlines()[0]} (this selfloop knows "
                          f"revisions up to {head_revision()}; a database from a newer selfloop needs that version)") from None


def _serialise(conn) -> None:  # noqa: ANN001
    """Two processes migrating (or creating) one database at once take turns: the second finds the
    first's schema when its turn comes. SQLite's writers already take turns (BEGIN IMMEDIATE)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('selfloop-schema'))")


def init_schema(engine: Engine) -> bool:
    """Bring an empty database to head, atomically with the check that it is empty (or already ours).
    False, and nothing done, when it holds tables that are not selfloop's."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import inspect

    with engine.begin() as conn:
        _serialise(conn)
        revision = MigrationContext.configure(conn).get_current_revision()
        if revision is None and inspect(conn).get_table_names():
            return False
        command.upgrade(alembic_config(connection=conn), "head")
    return True

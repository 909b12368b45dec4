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
            step(alembic_config(connection=conn), revision)
    except CommandError as exc:
        raise SchemaError(f"cannot migrate to {revision!r}: {str(exc).splitlines()[0]} (this selfloop knows "
                          f"revisions up to {head_revision()}; a database from a newer selfloop needs that version)") from None

"""Migrations are code with tests: up, down, up again with rows present; no drift from the models."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from selfloop.db.engine import make_engine, open_database, schema_revision
from selfloop.db.migrate import downgrade, head_revision, upgrade
from selfloop.db.models import Base
from selfloop.errors import SchemaError

VIEWS = {"iteration_summary", "loop_lineage", "sample_signals"}


def _drift(engine) -> list:  # noqa: ANN001
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, Base.metadata)


def test_migrations_match_models(db_url: str) -> None:
    engine = make_engine(db_url, create=True)
    upgrade(engine)
    assert _drift(engine) == []
    with engine.connect() as conn:
        names = set(inspect(conn).get_view_names())
    assert VIEWS <= names
    engine.dispose()


def test_up_down_up_with_rows(db_url: str) -> None:
    engine = make_engine(db_url, create=True)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO loops (name, base_model, config, config_hash, main_metric, seed, status) "
            "VALUES ('l1', 'tiny', '{}', 'h', 'a/b', 0, 'ready')"
        ))
        conn.execute(text("INSERT INTO iterations (loop_id, number, status) SELECT id, 0, 'running' FROM loops"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT loop, iteration FROM iteration_summary")).all() == [("l1", 0)]
    downgrade(engine, "base")
    with engine.connect() as conn:
        assert [t for t in inspect(conn).get_table_names() if t != "alembic_version"] == []
    upgrade(engine)
    assert schema_revision(engine) == (head_revision(), True)
    assert _drift(engine) == []
    engine.dispose()


def test_older_schema_is_refused_with_the_upgrade_command(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url, create=True)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'zzzz'"))
    engine.dispose()
    with pytest.raises(SchemaError, match="newer than this selfloop"):
        open_database(sqlite_url)
    engine = make_engine(sqlite_url)
    downgrade_target = "base"
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE alembic_version SET version_num = '{head_revision()}'"))
    downgrade(engine, downgrade_target)
    # Simulate an older schema: a table exists, the revision row is missing.
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE loops (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(SchemaError, match="run `selfloop db upgrade"):
        open_database(sqlite_url, init=True)


def test_fresh_database_is_initialised_only_when_asked(sqlite_url: str, tmp_path) -> None:  # noqa: ANN001
    from selfloop.errors import SelfloopError

    with pytest.raises(SelfloopError, match="no database at"):
        open_database(sqlite_url)
    db = open_database(sqlite_url, init=True)
    assert schema_revision(db.engine)[0] == head_revision()
    db.dispose()
    path = tmp_path / "selfloop.db"
    assert path.stat().st_mode & 0o077 == 0, "the database file must be owner-only"


def test_sqlite_connection_settings(sqlite_url: str) -> None:
    db = open_database(sqlite_url, init=True)
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    # Foreign keys are enforced: an iteration of a missing loop is refused.
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO iterations (loop_id, number, status) VALUES (999, 0, 'running')"))
    db.dispose()


def test_summary_view_revision_goes_down_and_up_with_rows(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url, create=True)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO loops (name, base_model, config, config_hash, main_metric, seed, status) "
            "VALUES ('l1', 'tiny', '{}', 'h', 'a/b', 0, 'ready')"
        ))
        conn.execute(text("INSERT INTO iterations (loop_id, number, status) SELECT id, 1, 'done' FROM loops"))
        conn.execute(text("INSERT INTO metrics (iteration_id, name, value) SELECT id, 'judge.vote_share', 0.75 FROM iterations"))

    def columns() -> list[str]:
        with engine.connect() as conn:
            return list(conn.execute(text("SELECT * FROM iteration_summary")).keys())

    assert {"vote_share", "train_loss", "warnings"} <= set(columns())
    with engine.connect() as conn:
        assert conn.execute(text("SELECT vote_share FROM iteration_summary")).scalar() == 0.75
    downgrade(engine, "0001")
    assert "vote_share" not in columns() and "main_metric" in columns()
    upgrade(engine)
    assert "vote_share" in columns() and _drift(engine) == []
    engine.dispose()

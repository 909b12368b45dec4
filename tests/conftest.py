"""Shared fixtures: real SQLite files and, when a server is configured, real PostgreSQL databases.

PostgreSQL: SELFLOOP_TEST_POSTGRES_URL names a role that may create databases (tests/support/postgres.sh
starts one and prints it); each test gets a fresh database, dropped afterwards. Without the variable
those tests skip, unless SELFLOOP_REQUIRE_POSTGRES=1 (CI) turns the skip into a failure.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'selfloop.db'}"


def _postgres_base() -> str | None:
    url = os.environ.get("SELFLOOP_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("SELFLOOP_REQUIRE_POSTGRES") == "1":
            pytest.fail("SELFLOOP_REQUIRE_POSTGRES=1 but SELFLOOP_TEST_POSTGRES_URL is not set")
        pytest.skip("no PostgreSQL server configured (set SELFLOOP_TEST_POSTGRES_URL; see tests/support/postgres.sh)")
    return url


@pytest.fixture
def postgres_url() -> str:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    base = _postgres_base()
    name = f"selfloop_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield make_url(base).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test against a SQLite file and a PostgreSQL database."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """Run the selfloop CLI in-process; returns (exit code, stdout, stderr)."""
    from selfloop.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main(list(argv))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return code, out.out, out.err

    return run

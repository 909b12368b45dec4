"""`selfloop sql` cannot write, whatever the text says: a table of hostile statements is run against
SQLite and PostgreSQL (as the read-only role of `selfloop db create-reader`), and after each one the
row counts, the schema and the file system are unchanged."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from selfloop.db.engine import make_engine
from selfloop.db.user_sql import run_readonly
from selfloop.errors import ReadOnlyViolation, SelfloopError

INSERT_LOOP = ("INSERT INTO loops (name, base_model, config, config_hash, main_metric, seed, status) "
               "VALUES ('l1', 'tiny', '{}', 'h', 'a/b', 0, 'ready')")


def _seed(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text(INSERT_LOOP))
        conn.execute(text("INSERT INTO iterations (loop_id, number, status) SELECT id, 1, 'done' FROM loops"))
        conn.execute(text("INSERT INTO metrics (iteration_id, name, value) SELECT id, 'm', 1.0 FROM iterations"))
    engine.dispose()


def _snapshot(url: str) -> tuple:
    """Row counts of every table, the schema and the roles: what must not change."""
    engine = make_engine(url)
    with engine.connect() as conn:
        insp = inspect(conn)
        tables = sorted(insp.get_table_names())
        counts = {t: conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar() for t in tables}
        schema = {t: [(c["name"], str(c["type"])) for c in insp.get_columns(t)] for t in tables}
        views = sorted(insp.get_view_names())
        # Roles are the server's, shared with tests running beside this one, whose fixtures make and drop reader
        # roles named selfloop_r_<hex>: those come and go; no hostile statement here names one.
        roles = (sorted(r for (r,) in conn.execute(text("SELECT rolname FROM pg_roles WHERE rolname !~ '^selfloop_r_[0-9a-f]+$'")))
                 if engine.dialect.name == "postgresql" else None)
    engine.dispose()
    return counts, schema, views, roles


def _schema(url: str) -> None:
    from selfloop.db.migrate import upgrade

    engine = make_engine(url, create=True)
    upgrade(engine)
    engine.dispose()


# Statements that must change nothing on either database. Several are the forms that broke the old
# hand-written check on PostgreSQL: an escape-string literal or a dollar sign in an identifier that
# hid a `;`, followed by COMMIT and a write.
HOSTILE = [
    "INSERT INTO loops (name, base_model, config, config_hash, main_metric, seed, status) VALUES ('x','t','{}','h','a/b',0,'ready')",
    "UPDATE loops SET name = 'hacked'",
    "DELETE FROM metrics",
    "DROP TABLE metrics",
    "DROP VIEW iteration_summary",
    "ALTER TABLE loops ADD COLUMN evil INTEGER",
    "CREATE TABLE evil (x INTEGER)",
    "CREATE INDEX evil ON loops (name)",
    "SELECT 1; DELETE FROM metrics",
    "select count(*) from loops; drop table loops;",
    "  /* comment */ delete from metrics",
    "WITH x AS (SELECT 1) DELETE FROM metrics",
    "REPLACE INTO loops (id) VALUES (1)",
    "TRUNCATE metrics",
    "BEGIN",
    "COMMIT",
    "SAVEPOINT s",
    "GRANT ALL ON loops TO public",
    "SELECT E'\\\\'';' AS x; COMMIT; DELETE FROM metrics; SELECT 1",
    "SELECT 'a' AS x$y; COMMIT; DELETE FROM metrics; --",
    "SELECT $$;$$; COMMIT; DELETE FROM metrics",
    "SELECT 1 -- ; COMMIT\n; DELETE FROM metrics",
    "/* ; */ SELECT 1; /* */ DELETE FROM metrics",
    "SELECT 1 AS \"a;b\"; DELETE FROM metrics",
]
POSTGRES_HOSTILE = [
    "WITH d AS (DELETE FROM metrics RETURNING id) SELECT * FROM d",
    "COPY loops TO '{file}'",
    "COPY (SELECT 1) TO PROGRAM 'touch {file}'",
    "COPY metrics FROM '/etc/hostname'",
    "SELECT pg_read_file('/etc/hostname')",
    "SELECT lo_import('/etc/hostname')",
    "SELECT lo_export(lo_create(0), '{file}')",
    "SELECT nextval('loops_id_seq')",
    "SELECT * FROM loops FOR UPDATE",
    "LOCK TABLE loops IN ACCESS EXCLUSIVE MODE",
    "CREATE TEMP TABLE t AS SELECT 1",
    "DO $$BEGIN DELETE FROM metrics; END$$",
    "SET ROLE selfloop_test",
    "SET SESSION AUTHORIZATION selfloop_test",
    "SELECT set_config('default_transaction_read_only', 'off', false); DELETE FROM metrics",
    "ALTER ROLE CURRENT_USER SET default_transaction_read_only = off",
    "CREATE ROLE evil LOGIN SUPERUSER",
    "VACUUM FULL loops",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'DELETE FROM metrics RETURNING 1'",
    "EXPLAIN ANALYZE DELETE FROM metrics",
    "PREPARE p AS DELETE FROM metrics",
]
SQLITE_HOSTILE = [
    "ATTACH DATABASE '{file}' AS other",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA user_version = 7",
    "PRAGMA wal_checkpoint",
    "PRAGMA writable_schema = ON",
    "PRAGMA foreign_keys = OFF",
    "VACUUM",
    "VACUUM INTO '{file}'",
    "SELECT fts3_tokenizer('simple')",
    "SELECT load_extension('/tmp/evil')",
    "SELECT writefile('{file}', 'x')",
    "ANALYZE",
    "CREATE TEMP TABLE t (x)",
    "CREATE TEMP VIEW v AS SELECT 1",
    "SELECT * FROM loops; DELETE FROM metrics",
]


def _expect_refused(url: str, statement: str) -> None:
    with pytest.raises(SelfloopError) as info:
        run_readonly(url, statement, timeout_ms=5000)
    assert "\n" not in str(info.value) and "[SQL:" not in str(info.value)


@pytest.mark.parametrize("statement", HOSTILE)
def test_hostile_statements_change_nothing(reader_url: str, db_url: str, statement: str) -> None:
    _seed(db_url)
    before = _snapshot(db_url)
    _expect_refused(reader_url, statement)
    assert _snapshot(db_url) == before


@pytest.mark.postgres
@pytest.mark.parametrize("statement", POSTGRES_HOSTILE)
def test_hostile_postgres_statements_change_nothing(postgres_url: str, postgres_reader_url: str, statement: str) -> None:
    reader = postgres_reader_url
    _seed(postgres_url)
    before = _snapshot(postgres_url)
    target = Path(f"/tmp/selfloop-hostile-{uuid.uuid4().hex}")
    _expect_refused(reader, statement.format(file=target))
    assert _snapshot(postgres_url) == before
    assert not target.exists()


@pytest.mark.parametrize("statement", SQLITE_HOSTILE)
def test_hostile_sqlite_statements_change_nothing(sqlite_url: str, tmp_path: Path, statement: str) -> None:
    _schema(sqlite_url)
    _seed(sqlite_url)
    before = _snapshot(sqlite_url)
    files_before = sorted(p.name for p in tmp_path.iterdir())
    _expect_refused(sqlite_url, statement.format(file=tmp_path / "other.db"))
    assert _snapshot(sqlite_url) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files_before


@pytest.mark.postgres
@pytest.mark.parametrize("which", ["superuser", "writer"])
def test_postgres_roles_that_can_write_are_refused_before_the_statement_runs(
    postgres_url: str, postgres_superuser_url: str, which: str
) -> None:
    """A superuser could write server files with COPY ... TO; the schema's owner could write tables."""
    _schema(postgres_url)
    _seed(postgres_url)
    before = _snapshot(postgres_url)
    url = postgres_superuser_url if which == "superuser" else postgres_url
    target = Path(f"/tmp/selfloop-hostile-{uuid.uuid4().hex}")
    with pytest.raises(ReadOnlyViolation, match="create-reader"):
        run_readonly(url, f"COPY loops TO '{target}'")
    with pytest.raises(ReadOnlyViolation, match="read-only role"):
        run_readonly(url, "SELECT 1")
    assert not target.exists()
    assert _snapshot(postgres_url) == before


@pytest.mark.postgres
def test_reader_cannot_break_a_writers_lock_connection(postgres_url: str, postgres_reader_url: str) -> None:
    """pg_terminate_backend through `selfloop sql` was the way to break the writer lock."""
    writer = create_engine(make_engine(postgres_url).url)
    conn = writer.connect()
    conn.execute(text("SELECT pg_advisory_lock(1, 2)"))
    with pytest.raises(SelfloopError):
        run_readonly(postgres_reader_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE pid <> pg_backend_pid() AND usename = 'selfloop_test'")
    assert conn.execute(text("SELECT 1")).scalar() == 1  # still alive
    conn.close()
    writer.dispose()


def test_sqlite_time_and_size_limits(sqlite_url: str) -> None:
    _schema(sqlite_url)
    started = time.monotonic()
    with pytest.raises(SelfloopError, match="time limit"):
        run_readonly(sqlite_url, "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT max(i) FROM r",
                     timeout_ms=500)
    assert time.monotonic() - started < 10
    with pytest.raises(SelfloopError, match="too big"):
        run_readonly(sqlite_url, "SELECT zeroblob(999999999)")
    with pytest.raises(SelfloopError, match="too big"):
        run_readonly(sqlite_url, "SELECT length(group_concat(hex(randomblob(1000)))) FROM "
                                 "(WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r LIMIT 20000) SELECT i FROM r)")


@pytest.mark.postgres
def test_postgres_time_limit(postgres_reader_url: str) -> None:
    started = time.monotonic()
    with pytest.raises(SelfloopError, match="time limit"):
        run_readonly(postgres_reader_url, "SELECT pg_sleep(30)", timeout_ms=500)
    assert time.monotonic() - started < 10


def test_rows_are_bounded(reader_url: str) -> None:
    result = run_readonly(reader_url, "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 50) "
                                      "SELECT i FROM r", max_rows=10)
    assert [r[0] for r in result.rows] == list(range(1, 11)) and result.truncated
    result = run_readonly(reader_url, "SELECT 1 AS one", max_rows=10)
    assert result.rows == [(1,)] and not result.truncated
    with pytest.raises(SelfloopError, match="max-rows"):
        run_readonly(reader_url, "SELECT 1", max_rows=10**9)


def test_reads_work_with_quotes_percent_pragmas_and_functions(reader_url: str, db_url: str) -> None:
    _seed(db_url)
    result = run_readonly(reader_url, "SELECT name, 'a;b:c%' AS s FROM loops WHERE name LIKE 'l%' -- trailing; comment")
    assert result.columns == ["name", "s"] and result.rows == [("l1", "a;b:c%")]
    assert run_readonly(reader_url, "SELECT loop, iteration FROM iteration_summary;").rows == [("l1", 1)]
    assert run_readonly(reader_url, "SELECT count(*), max(value), max(length(name)) FROM metrics").rows == [(1, 1.0, 1)]
    if db_url.startswith("sqlite"):
        names = [r[0] for r in run_readonly(reader_url, "SELECT name FROM pragma_table_info('loops') ORDER BY cid").rows]
        assert names[:2] == ["id", "name"]
        assert run_readonly(reader_url, "PRAGMA table_info(loops)").rows[0][1] == "id"
        assert run_readonly(reader_url, "SELECT value FROM json_each('[1, 2]')").rows == [(1,), (2,)]


def test_the_authorizer_refuses_writes_on_its_own(sqlite_url: str) -> None:
    """Layer by layer: the authorizer alone (on a writable connection) refuses a write and an ATTACH."""
    import sqlite3

    from selfloop.db.sqlite_readonly import Authorizer as _Authorizer

    _schema(sqlite_url)
    _seed(sqlite_url)
    conn = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    conn.set_authorizer(_Authorizer())
    with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
        conn.execute("DELETE FROM loops")
    with pytest.raises(sqlite3.DatabaseError):
        conn.execute("ATTACH DATABASE ':memory:' AS m")
    assert conn.execute("SELECT count(*) FROM loops").fetchone() == (1,)
    conn.close()


def test_cli_sql_formats_and_refusal(sqlite_url: str, run_cli) -> None:
    code, out, err = run_cli("db", "upgrade", "--db", sqlite_url)
    assert code == 0, err
    code, out, _ = run_cli("sql", "--db", sqlite_url, "SELECT count(*) AS n FROM loops")
    assert code == 0 and out.split() == ["n", "-", "0", "(1", "row)"]
    _seed(sqlite_url)
    code, out, _ = run_cli("sql", "--db", sqlite_url, "--format", "json", "SELECT name, seed FROM loops")
    assert json.loads(out) == [{"name": "l1", "seed": 0}]
    code, out, _ = run_cli("sql", "--db", sqlite_url, "--format", "csv", "SELECT name, seed FROM loops")
    assert out.strip().splitlines() == ["name,seed", "l1,0"]
    code, out, err = run_cli("sql", "--db", sqlite_url, "DROP TABLE loops")
    assert code == 1 and err.startswith("selfloop: error: refused: a schema change is not allowed") and len(err.strip().splitlines()) == 1
    code, out, err = run_cli("sql", "--db", sqlite_url, "DELETE FROM loops")
    assert code == 1 and err.startswith("selfloop: error: refused: DELETE loops is not allowed")
    code, out, err = run_cli("sql", "--db", sqlite_url, "SELECT * FROM no_such_table")
    assert code == 1 and "no such table" in err and "Traceback" not in err
    code, out, err = run_cli("sql", "--db", sqlite_url, "--max-rows", "1", "SELECT name FROM loops UNION ALL SELECT 'x'")
    assert code == 0 and "only the first 1 rows" in err


@pytest.mark.postgres
def test_cli_create_reader_prints_a_url_that_reads_but_cannot_write(postgres_url: str, postgres_superuser_url: str, run_cli) -> None:
    assert run_cli("db", "upgrade", "--db", postgres_url)[0] == 0
    _seed(postgres_url)
    role = f"selfloop_r_{uuid.uuid4().hex[:8]}"
    code, out, err = run_cli("db", "create-reader", "--db", postgres_url, "--role", role)
    assert code == 0, err
    url = out.strip()
    assert f"{role}:" in url
    code, out, err = run_cli("sql", "--db", url, "--format", "json", "SELECT name FROM loops")
    assert code == 0 and json.loads(out) == [{"name": "l1"}]
    code, out, err = run_cli("db", "create-reader", "--db", postgres_url, "--role", role)  # again: a new password
    assert code == 0, err
    old_url, url = url, out.strip()
    assert old_url != url and run_cli("sql", "--db", old_url, "SELECT 1")[0] == 1  # the old password is gone
    code, out, err = run_cli("sql", "--db", url, "SELECT 1; COMMIT; DELETE FROM metrics; SELECT 1")
    assert code == 1 and "one statement" in err
    code, out, err = run_cli("sql", "--db", postgres_url, "SELECT 1")
    assert code == 1 and "create-reader" in err
    # The role's own settings: read-only transactions even outside selfloop.
    reader = create_engine(make_engine(url).url)
    with reader.connect() as conn:
        assert conn.execute(text("SHOW default_transaction_read_only")).scalar() == "on"
    reader.dispose()
    admin = create_engine(postgres_superuser_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
        conn.exec_driver_sql(f'DROP ROLE "{role}"')
    admin.dispose()


def test_reads_run_beside_a_busy_writer(sqlite_url: str) -> None:
    """A reader never blocks the writer, and sees committed rows only (WAL)."""
    from selfloop.db.engine import open_database

    db = open_database(sqlite_url, init=True)
    done = threading.Event()

    def write() -> None:
        for _ in range(20):
            with db.session() as s:
                s.execute(text(INSERT_LOOP.replace("'l1'", f"'l{uuid.uuid4().hex[:6]}'")))
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    while not done.is_set():
        run_readonly(sqlite_url, "SELECT count(*) FROM loops")
    thread.join()
    assert run_readonly(sqlite_url, "SELECT count(*) FROM loops").rows == [(20,)]
    db.dispose()


def test_a_table_keeps_one_line_per_row_when_cells_hold_line_breaks(sqlite_url: str, run_cli) -> None:
    """A sample's text with line breaks broke `selfloop sql`'s table into lines that were not rows."""
    from selfloop.db.engine import open_database

    open_database(sqlite_url, init=True).dispose()
    code, out, err = run_cli("sql", "--db", sqlite_url, "SELECT 'first line' || char(10) || 'second' || char(9) || 'tab' AS text, 2 AS n")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 4 and lines[2].startswith("first line\\nsecond\\ttab") and lines[2].rstrip().endswith("2")
    code, out, _ = run_cli("sql", "--db", sqlite_url, "--format", "json", "SELECT 'a' || char(10) || 'b' AS text")
    assert code == 0 and '"a\\nb"' in out  # the other formats keep the text as it is

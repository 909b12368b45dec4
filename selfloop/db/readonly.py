"""User SQL on connections that cannot write, whatever the text says (`selfloop sql`, and every
other reader of user-supplied SQL).

No part of this reads the statement to decide whether it is safe: the database engine refuses.

SQLite: the file is opened read-only (`mode=ro`) with `PRAGMA query_only`; an authorizer allows
reading tables, the functions in `SQLITE_FUNCTIONS` and the reading pragmas, and refuses everything
else (writes, ATTACH and so VACUUM INTO, transactions, unknown functions such as fts3_tokenizer or
load_extension). Python's sqlite3 runs one statement per call. A progress handler ends a statement
at its time limit; `setlimit` bounds the size of any value (no `zeroblob(999999999)`) and of the
statement, and at most `max_rows` rows are fetched.

PostgreSQL: the connection must belong to a read-only role (`selfloop db create-reader` makes one:
SELECT on the tables and views and nothing else, `default_transaction_read_only`, a statement
timeout); a superuser or a role that can write is refused before the statement is sent, since such a
role could write server files (`COPY ... TO`) or stop other sessions. The statement is sent with the
extended query protocol, which runs exactly one statement (a `;` followed by more is an error from
the server, not a parse here), inside a READ ONLY transaction with a statement timeout that is
always rolled back; rows are streamed and at most `max_rows` are kept.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfloop.db.engine import normalise_url, sqlite_path
from selfloop.errors import ReadOnlyViolation, SelfloopError

DEFAULT_MAX_ROWS = 10_000
MAX_ROWS = 1_000_000
MAX_VALUE_BYTES = 16 * 1024 * 1024  # the largest string or blob a statement may build (SQLite)
MAX_SQL_BYTES = 1024 * 1024  # the longest statement

# PRAGMAs that only read; those in the second set take an argument (a table or index name).
_READ_PRAGMAS = {
    "table_list", "database_list", "user_version", "schema_version", "application_id", "page_count",
    "page_size", "freelist_count", "journal_mode", "integrity_check", "quick_check", "compile_options",
    "function_list", "pragma_list", "collation_list", "module_list", "encoding", "foreign_keys", "busy_timeout",
    "read_uncommitted",  # SQLAlchemy reads it to learn the isolation level
}
_READ_PRAGMAS_WITH_ARGUMENT = {
    "table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list",
    "foreign_key_check", "integrity_check", "quick_check",
}

# The SQL functions a reading statement may call: SQLite's core, aggregate, window, date, math and
# JSON functions. Anything else (fts3_tokenizer, load_extension, functions of extensions) is refused.
SQLITE_FUNCTIONS = frozenset("""
    abs char coalesce concat concat_ws format glob hex ifnull iif instr length like likelihood likely lower
    ltrim max min nullif octet_length printf quote random randomblob replace round rtrim sign soundex
    sqlite_version substr substring trim typeof unhex unicode unlikely upper zeroblob
    avg count group_concat string_agg sum total median
    row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
    date time datetime julianday unixepoch strftime timediff
    acos acosh asin asinh atan atan2 atanh ceil ceiling cos cosh degrees exp floor ln log log10 log2 mod pi pow
    power radians sin sinh sqrt tan tanh trunc
    json json_array json_array_length json_extract json_insert json_object json_patch json_remove json_replace
    json_set json_type json_valid json_quote json_group_array json_group_object json_each json_tree
    jsonb jsonb_array jsonb_extract jsonb_insert jsonb_object jsonb_patch jsonb_remove jsonb_replace jsonb_set
    jsonb_group_array jsonb_group_object json_error_position json_pretty
""".split())

_ACTION_NAMES = {getattr(sqlite3, name): name.removeprefix("SQLITE_").replace("_", " ") for name in (
    "SQLITE_CREATE_INDEX", "SQLITE_CREATE_TABLE", "SQLITE_CREATE_TEMP_INDEX", "SQLITE_CREATE_TEMP_TABLE",
    "SQLITE_CREATE_TEMP_TRIGGER", "SQLITE_CREATE_TEMP_VIEW", "SQLITE_CREATE_TRIGGER", "SQLITE_CREATE_VIEW",
    "SQLITE_DELETE", "SQLITE_DROP_INDEX", "SQLITE_DROP_TABLE", "SQLITE_DROP_TEMP_INDEX", "SQLITE_DROP_TEMP_TABLE",
    "SQLITE_DROP_TEMP_TRIGGER", "SQLITE_DROP_TEMP_VIEW", "SQLITE_DROP_TRIGGER", "SQLITE_DROP_VIEW",
    "SQLITE_INSERT", "SQLITE_PRAGMA", "SQLITE_READ", "SQLITE_SELECT", "SQLITE_TRANSACTION", "SQLITE_UPDATE",
    "SQLITE_ATTACH", "SQLITE_DETACH", "SQLITE_ALTER_TABLE", "SQLITE_REINDEX", "SQLITE_ANALYZE",
    "SQLITE_CREATE_VTABLE", "SQLITE_DROP_VTABLE", "SQLITE_FUNCTION", "SQLITE_SAVEPOINT", "SQLITE_RECURSIVE",
)}


MAX_RESULT_BYTES = 64 * 1024 * 1024  # text and blobs kept of one result; rows past it are not fetched


@dataclass
class Result:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False  # more rows existed than max_rows, or than MAX_RESULT_BYTES hold
    cut_by_size: bool = False  # the rows kept reached MAX_RESULT_BYTES before max_rows


def _row_bytes(row: tuple[Any, ...]) -> int:
    """About how much a fetched row holds: the length of its text and blobs, 8 for any other value."""
    return sum(len(v) if isinstance(v, (str, bytes, bytearray, memoryview)) else 8 for v in row)


def _collect(rows: Any, max_rows: int, max_bytes: int = MAX_RESULT_BYTES) -> tuple[list[tuple[Any, ...]], bool, bool]:
    """At most `max_rows` rows and about `max_bytes` from an iterator of rows, fetched one at a time so
    that neither bound is passed in memory: (rows, truncated, cut by size)."""
    kept: list[tuple[Any, ...]] = []
    size = 0
    for row in rows:
        if len(kept) == max_rows:
            return kept, True, False
        size += _row_bytes(tuple(row))
        if size > max_bytes and kept:
            return kept, True, True
        kept.append(tuple(row))
    return kept, False, False


def _max_rows(max_rows: int | None) -> int:
    if max_rows is None:
        return DEFAULT_MAX_ROWS
    if not 1 <= max_rows <= MAX_ROWS:
        raise SelfloopError(f"--max-rows {max_rows}: must be from 1 to {MAX_ROWS}")
    return max_rows


def run_readonly(url: str, sql: str, *, timeout_ms: int = 30000, max_rows: int | None = None) -> Result:
    """Run one statement of user SQL where it cannot write; at most `max_rows` rows (default 10,000)."""
    limit = _max_rows(max_rows)
    if not sql.strip():
        raise ReadOnlyViolation("empty statement")
    if len(sql.encode()) > MAX_SQL_BYTES:
        raise SelfloopError(f"the statement is {len(sql.encode())} bytes, above the limit of {MAX_SQL_BYTES}")
    parsed = normalise_url(url)
    path = sqlite_path(parsed)
    if path is not None:
        return _run_sqlite(path, sql, timeout_ms, limit)
    return _run_postgres(parsed.render_as_string(hide_password=False), sql, timeout_ms, limit)


# -- SQLite ---------------------------------------------------------------------------------------
class _Authorizer:
    """Allows reading; remembers the first refused action so the error can name it."""

    def __init__(self) -> None:
        self.refused: str | None = None

    def __call__(self, action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in SQLITE_FUNCTIONS:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if (arg2 is None and name in _READ_PRAGMAS) or (arg2 is not None and name in _READ_PRAGMAS_WITH_ARGUMENT):
                return sqlite3.SQLITE_OK
        # Building a table-valued function (pragma_table_info, json_each) asks for these; the file is
        # opened read-only with query_only, so no change to the schema table can happen.
        if action == sqlite3.SQLITE_UPDATE and arg1 == "sqlite_master":
            return sqlite3.SQLITE_OK
        if self.refused is None:
            if arg1 in ("sqlite_master", "sqlite_temp_master"):  # SQLite's bookkeeping of a CREATE, DROP or ALTER
                self.refused = "a schema change"
            else:
                what = _ACTION_NAMES.get(action, f"action {action}")
                self.refused = f"{what} {arg2 if action == sqlite3.SQLITE_FUNCTION else arg1 or ''}".strip()
        return sqlite3.SQLITE_DENY


class _ReadOnlyConnection(sqlite3.Connection):
    """A connection whose progress handler stops a statement once `deadline` (monotonic) has passed."""

    deadline = float("inf")


def connect_sqlite_readonly(path: Path, busy_timeout_s: float) -> tuple[_ReadOnlyConnection, _Authorizer]:
    """A connection to `path` that cannot write: opened `mode=ro` with `query_only`, bounded value and
    statement sizes, no ATTACH, and the authorizer; set `.deadline` before each statement."""
    if not path.exists():
        raise SelfloopError(f"no database at {path}")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=busy_timeout_s, isolation_level=None,
                               factory=_ReadOnlyConnection, check_same_thread=False)
    except sqlite3.Error as exc:
        raise SelfloopError(f"cannot open {path} read-only: {exc}") from None
    authorizer = _Authorizer()
    conn.execute("PRAGMA query_only = ON")
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_BYTES)
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.set_authorizer(authorizer)
    conn.set_progress_handler(lambda: int(time.monotonic() > conn.deadline), 10_000)  # nonzero ends the statement
    return conn, authorizer


def _run_sqlite(path: Path, sql: str, timeout_ms: int, max_rows: int) -> Result:
    conn, authorizer = connect_sqlite_readonly(path, timeout_ms / 1000)
    conn.deadline = time.monotonic() + timeout_ms / 1000
    try:
        try:
            cur = conn.execute(sql)
            rows, truncated, by_size = _collect(cur, max_rows)
        except sqlite3.DatabaseError as exc:
            msg = str(exc)
            if authorizer.refused is not None or "not authorized" in msg or "authorization denied" in msg:
                raise ReadOnlyViolation(
                    f"refused: {authorizer.refused or msg} is not allowed; `selfloop sql` only reads") from None
            if "readonly" in msg or "read-only" in msg:
                raise ReadOnlyViolation(f"refused by the read-only connection: {msg}") from None
            if msg == "interrupted":
                raise SelfloopError(f"the statement ran past its time limit of {timeout_ms} ms and was stopped") from None
            raise SelfloopError(f"SQL error: {msg}") from None
        except sqlite3.ProgrammingError as exc:  # several statements in one string
            raise ReadOnlyViolation(f"refused: {exc}") from None
        columns = [d[0] for d in cur.description or []]
        return Result(columns, rows, truncated, by_size)
    finally:
        conn.close()


# -- PostgreSQL -----------------------------------------------------------------------------------
# Membership in these lets a role read or write server files, run programs or signal other sessions.
_DANGEROUS_ROLES = ("pg_write_server_files", "pg_read_server_files", "pg_execute_server_program", "pg_signal_backend")

# Membership of any kind counts ('MEMBER', not 'USAGE'): a NOINHERIT member, as `create-reader` makes, has
# none of the role's privileges until it runs SET ROLE, and any statement can run set_config('role', ...).
_ROLE_CHECK = """
WITH member_of AS (
  SELECT m.oid, m.rolname, m.rolsuper OR m.rolcreaterole OR m.rolreplication OR m.rolbypassrls AS powerful
  FROM pg_roles m WHERE pg_has_role(current_user, m.oid, 'MEMBER')
), writable AS (
  SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg_toast%%'
)
SELECT EXISTS (SELECT 1 FROM member_of WHERE powerful) AS powerful,
       (SELECT min(rolname) FROM member_of WHERE rolname = ANY(%(dangerous)s)) AS dangerous_member,
       (SELECT min(m.rolname || ' (it can write ' || w.relname || ')') FROM member_of m JOIN writable w
         ON has_table_privilege(m.oid, w.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')) AS writer
"""


def check_reader_role(cur, role: str) -> None:  # noqa: ANN001
    """Refuse a role that could write or reach beyond the database, whatever a statement says."""
    cur.execute(_ROLE_CHECK, {"dangerous": list(_DANGEROUS_ROLES)})
    powerful, dangerous_member, writer = cur.fetchone()
    why = ("is (or is a member of) a superuser or a role that may create roles, replicate or bypass row security"
           if powerful else
           f"is a member of {dangerous_member}, which may read or write server files, run programs or signal "
           "other sessions" if dangerous_member else
           f"is or can become role {writer}" if writer else None)
    if why:
        raise ReadOnlyViolation(
            f"role {role!r} {why}: user SQL runs only as a read-only role; create one with "
            "`selfloop db create-reader --db URL` and pass its URL (or set database.reader_url)")


def _run_postgres(url: str, sql: str, timeout_ms: int, max_rows: int) -> Result:
    import psycopg

    from selfloop.db.engine import _safe

    conninfo = normalise_url(url).set(drivername="postgresql")
    try:
        conn = psycopg.connect(conninfo.render_as_string(hide_password=False), connect_timeout=10, autocommit=False)
    except psycopg.Error as exc:
        raise SelfloopError(f"cannot connect to {_safe(url)}: {str(exc).strip().splitlines()[0]}") from None
    try:
        cur = conn.cursor()
        check_reader_role(cur, conninfo.username or "")
        conn.rollback()
        cur.execute("SET TRANSACTION READ ONLY")
        cur.execute("SELECT set_config('statement_timeout', %s, true)", (str(int(timeout_ms)),))
        try:
            # stream() sends the statement with the extended query protocol: exactly one statement.
            rows, truncated, by_size = _collect(cur.stream(sql), max_rows)
        except psycopg.Error as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            state = getattr(exc, "sqlstate", None)
            if state in ("25006", "42501"):  # read_only_sql_transaction, insufficient_privilege
                raise ReadOnlyViolation(f"refused by the read-only role: {msg}") from None
            if state == "42601" and "multiple commands" in msg:
                raise ReadOnlyViolation("several statements at once are refused: give one statement") from None
            if state is None and "COPY" in msg:  # psycopg refuses COPY through stream(); the server has started it
                raise ReadOnlyViolation("COPY is not run by `selfloop sql`: use SELECT (and --format csv for CSV)") from None
            if state == "57014":
                raise SelfloopError(f"the statement ran past its time limit of {timeout_ms} ms and was stopped") from None
            raise SelfloopError(f"SQL error: {msg}") from None
        columns = [d.name for d in cur.description or []]
        return Result(columns, rows, truncated, by_size)
    finally:
        try:
            conn.rollback()
        except psycopg.Error:  # a statement left half-read (COPY): closing the connection ends it all the same
            pass
        finally:
            conn.close()


READER_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def create_reader(admin_url: str, role: str = "selfloop_reader", statement_timeout_ms: int = 30000) -> str:
    """Create (or reset) a PostgreSQL role that can only read this database; return its URL.

    The role may log in and SELECT the tables and views of the public schema (including tables later
    migrations create, through default privileges of the role running this) and nothing else; its
    transactions are read-only by default and its statements time out. Run it with the role that owns
    the schema (the one `selfloop db upgrade` used); that role needs CREATEROLE. Running it again
    gives the role a new password.
    """
    import psycopg
    from psycopg import sql as pgsql

    if not READER_ROLE.fullmatch(role):
        raise SelfloopError(f"--role {role!r}: use 1-63 lowercase letters, digits or '_', not starting with a digit")
    parsed = normalise_url(admin_url)
    if parsed.get_backend_name() != "postgresql":
        raise SelfloopError("create-reader is for PostgreSQL; an SQLite database is opened read-only by `selfloop sql` itself")
    password = secrets.token_urlsafe(24)
    ident = pgsql.Identifier(role)
    conn = psycopg.connect(parsed.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True)
    try:
        with conn.transaction():
            cur = conn.cursor()
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if cur.fetchone():  # reset: only a superuser may name SUPERUSER, REPLICATION or BYPASSRLS in ALTER ROLE;
                # the login check below refuses a role that has any of them
                cur.execute(pgsql.SQL("ALTER ROLE {} LOGIN NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD {}")
                            .format(ident, pgsql.Literal(password)))
            else:
                cur.execute(pgsql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                                      "NOBYPASSRLS NOINHERIT PASSWORD {}").format(ident, pgsql.Literal(password)))
            for setting, value in (("default_transaction_read_only", "on"),
                                   ("statement_timeout", str(int(statement_timeout_ms))),
                                   ("idle_in_transaction_session_timeout", "60000")):
                cur.execute(pgsql.SQL("ALTER ROLE {} SET {} = {}").format(ident, pgsql.Identifier(setting), pgsql.Literal(value)))
            database = pgsql.Identifier(parsed.database)
            cur.execute(pgsql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, ident))
            cur.execute(pgsql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(ident))
            cur.execute(pgsql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(ident))
            cur.execute(pgsql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {}").format(ident))
    except psycopg.Error as exc:
        raise SelfloopError(f"create-reader failed: {str(exc).strip().splitlines()[0]} (the --db role needs "
                            "CREATEROLE and must own selfloop's tables)") from None
    finally:
        conn.close()
    url = parsed.set(username=role, password=password).render_as_string(hide_password=False)
    run_readonly(url, "SELECT 1")  # log in as the new role: it connects and passes the reader check
    return url


# -- SQLAlchemy engines for readers of the store (the dashboard) -----------------------------------
def reader_engine(url: str, *, timeout_ms: int = 30000):  # noqa: ANN201
    """An SQLAlchemy engine whose every connection is one of the read-only connections above.

    SQLite: `connect_sqlite_readonly` (the authorizer refuses any write, whatever the statement).
    PostgreSQL: the role must pass `check_reader_role` (checked on each new connection), and sessions
    are read-only with a statement timeout. A bad URL or a role that can write is refused here.
    """
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import QueuePool

    parsed = normalise_url(url)
    path = sqlite_path(parsed)
    if path is not None:
        if not path.exists():
            raise SelfloopError(f"no database at {path}")
        engine = create_engine(parsed, creator=lambda: connect_sqlite_readonly(path, timeout_ms / 1000)[0],
                               poolclass=QueuePool, pool_size=4, max_overflow=8)

        @event.listens_for(engine, "before_cursor_execute")
        def _deadline(conn, _cursor, _statement, _params, _context, _many) -> None:  # noqa: ANN001
            conn.connection.dbapi_connection.deadline = time.monotonic() + timeout_ms / 1000
    else:
        options = f"-c default_transaction_read_only=on -c statement_timeout={int(timeout_ms)}"
        engine = create_engine(parsed, pool_pre_ping=True, connect_args={"options": options, "connect_timeout": 10})

        @event.listens_for(engine, "connect")
        def _check(dbapi_conn, _record) -> None:  # noqa: ANN001
            with dbapi_conn.cursor() as cur:
                check_reader_role(cur, parsed.username or "")
            dbapi_conn.rollback()
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except ReadOnlyViolation:
        engine.dispose()
        raise
    except Exception as exc:  # noqa: BLE001 - one line naming the database
        from selfloop.db.engine import _safe

        engine.dispose()
        cause = getattr(exc, "orig", None) or exc
        if isinstance(cause, ReadOnlyViolation):
            raise cause from None
        raise SelfloopError(f"cannot open {_safe(url)} read-only: {str(cause).strip().splitlines()[0]}") from None
    return engine

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

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfloop.db.engine import normalise_url, safe_url, sqlite_path
from selfloop.db.reader_role import check_reader_role
from selfloop.db.sqlite_readonly import MAX_SQL_BYTES, connect_sqlite_readonly
from selfloop.errors import ReadOnlyViolation, SelfloopError

DEFAULT_MAX_ROWS = 10_000
MAX_ROWS = 1_000_000
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
    that neither bound is passed in memory: (rows, truncated, cut by size). A first row alone above
    `max_bytes` is refused (keeping it would pass the bound)."""
    kept: list[tuple[Any, ...]] = []
    size = 0
    for row in rows:
        if len(kept) == max_rows:
            return kept, True, False
        size += _row_bytes(tuple(row))
        if size > max_bytes:
            if kept:
                return kept, True, True
            raise SelfloopError(f"the first row holds about {size} bytes, above the limit of {max_bytes} for a "
                                "result: select fewer or shorter columns (substr, length)")
        kept.append(tuple(row))
    return kept, False, False


# What SQLite may allocate while it runs a statement of user SQL (a row of 200 values of 16 MiB took 3 GB):
# past it, the statement fails as "out of memory". Process-wide in SQLite, so set for the statement only.
SQLITE_HEAP_LIMIT = 4 * MAX_RESULT_BYTES
# A value PostgreSQL sends (text, JSON, bytea): larger ones are refused before Python copies them.
MAX_VALUE_BYTES = 16 * 1024 * 1024


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
def _run_sqlite(path: Path, sql: str, timeout_ms: int, max_rows: int) -> Result:
    conn, authorizer = connect_sqlite_readonly(path, timeout_ms / 1000)
    conn.deadline = time.monotonic() + timeout_ms / 1000
    heap = conn.set_heap_limit(SQLITE_HEAP_LIMIT)
    try:
        try:
            cur = conn.execute(sql)
            rows, truncated, by_size = _collect(cur, max_rows)
        except (sqlite3.DatabaseError, MemoryError) as exc:
            msg = str(exc)
            if isinstance(exc, MemoryError) or msg == "out of memory":
                raise SelfloopError(f"the statement needs more than {SQLITE_HEAP_LIMIT} bytes of memory (a result "
                                    "row that large cannot be shown): select fewer or shorter columns") from None
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
        if heap is not None:
            conn.set_heap_limit(heap)
        conn.close()


# -- PostgreSQL -----------------------------------------------------------------------------------
def _run_postgres(url: str, sql: str, timeout_ms: int, max_rows: int) -> Result:
    import psycopg

    conninfo = normalise_url(url).set(drivername="postgresql")
    try:
        conn = psycopg.connect(conninfo.render_as_string(hide_password=False), connect_timeout=10, autocommit=False)
    except psycopg.Error as exc:
        raise SelfloopError(f"cannot connect to {safe_url(url)}: {str(exc).strip().splitlines()[0]}") from None
    try:
        _bound_values(conn)
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
            if isinstance(exc, psycopg.DataError) and "above the limit" in msg:
                raise SelfloopError(msg) from None
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


def _bound_values(conn: Any) -> None:
    """Text, JSON and bytea values of this connection are refused above MAX_VALUE_BYTES before Python copies
    them (a 200 MB row took 1.4 GB once decoded); what is below is loaded as psycopg would."""
    import psycopg
    from psycopg.types.json import JsonbLoader, JsonLoader
    from psycopg.types.string import ByteaLoader, TextLoader

    def bounded(base: type) -> type:
        class Bounded(base):  # psycopg's loader classes, chosen at run time
            def load(self, data: Any) -> Any:
                if len(data) > MAX_VALUE_BYTES:
                    raise psycopg.DataError(f"a value of {len(data)} bytes, above the limit of {MAX_VALUE_BYTES} "
                                            "for one value: select a shorter part of it (substr, length)")
                return super().load(data)

        return Bounded

    for names, base in ((("text", "varchar", "bpchar", "name"), TextLoader),
                        (("json",), JsonLoader), (("jsonb",), JsonbLoader), (("bytea",), ByteaLoader)):
        loader = bounded(base)
        for name in names:
            conn.adapters.register_loader(name, loader)

"""User SQL on read-only connections (`selfloop sql`).

Defence in layers, so one mistake does not open a write path:
1. one statement only, and it must start with a reading keyword (SELECT, WITH, VALUES, EXPLAIN,
   PRAGMA on SQLite, SHOW/TABLE on PostgreSQL);
2. SQLite: the file is opened read-only (mode=ro) with PRAGMA query_only, and an authorizer
   refuses everything but reads (no ATTACH, no pragma writes);
   PostgreSQL: a READ ONLY transaction with a statement timeout that is always rolled back.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import Any

from selfloop.db.engine import normalise_url, sqlite_path
from selfloop.errors import ReadOnlyViolation, SelfloopError

_READ_KEYWORDS = {"sqlite": {"select", "with", "values", "explain", "pragma"}, "postgresql": {"select", "with", "values", "explain", "show", "table"}}

# PRAGMAs that only read. Anything else (and any pragma given a value) is refused.
_READ_PRAGMAS = {
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo", "foreign_key_list",
    "foreign_key_check", "database_list", "user_version", "schema_version", "application_id", "page_count",
    "page_size", "freelist_count", "journal_mode", "integrity_check", "quick_check", "compile_options",
    "function_list", "pragma_list", "collation_list", "encoding", "foreign_keys", "busy_timeout",
}


@dataclass
class Result:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def _strip_comments_and_literals(sql: str) -> str:
    """SQL with comments removed and string/identifier literals blanked, for keyword checks."""
    out, i, n = [], 0, len(sql)
    while i < n:
        c = sql[i]
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
            out.append(" ")
        elif c in "'\"`":
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # doubled quote escapes itself
                        j += 2
                        continue
                    break
                j += 1
            out.append(" ")
            i = j + 1
        elif c == "$" and (m := re.match(r"\$(\w*)\$", sql[i:])):  # PostgreSQL dollar quoting
            tag = m.group(0)
            j = sql.find(tag, i + len(tag))
            out.append(" ")
            i = n if j < 0 else j + len(tag)
        else:
            out.append(c)
            i += 1
    return "".join(out)


def check_statement(sql: str, dialect: str) -> None:
    """Refuse anything but one reading statement, before it reaches the database."""
    bare = _strip_comments_and_literals(sql).strip()
    body = bare.rstrip(";").strip()
    if not body:
        raise ReadOnlyViolation("empty statement")
    if ";" in body:
        raise ReadOnlyViolation("several statements at once are refused: give one statement")
    keyword = re.match(r"[A-Za-z_]+", body)
    first = keyword.group(0).lower() if keyword else body[:10]
    if first not in _READ_KEYWORDS[dialect]:
        raise ReadOnlyViolation(f"{first.upper()} statements are refused: `selfloop sql` only reads")
    if first == "pragma":
        m = re.match(r"pragma\s+(?:\w+\s*\.\s*)?(\w+)\s*(.*)$", body, re.IGNORECASE | re.DOTALL)
        if not m or m.group(1).lower() not in _READ_PRAGMAS or "=" in m.group(2):
            raise ReadOnlyViolation("only reading PRAGMAs without a value are allowed")


def _sqlite_authorizer(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and arg2 is None and (arg1 or "").lower() in _READ_PRAGMAS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def run_readonly(url: str, sql: str, *, timeout_ms: int = 30000, max_rows: int | None = None) -> Result:
    parsed = normalise_url(url)
    dialect = parsed.get_backend_name()
    check_statement(sql, dialect)
    path = sqlite_path(parsed)
    if path is not None:
        return _run_sqlite(path, sql, timeout_ms, max_rows)
    return _run_postgres(url, sql, timeout_ms, max_rows)


def _run_sqlite(path, sql: str, timeout_ms: int, max_rows: int | None) -> Result:  # noqa: ANN001
    if not path.exists():
        raise SelfloopError(f"no database at {path}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout_ms / 1000, isolation_level=None)
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.set_authorizer(_sqlite_authorizer)
        try:
            cur = conn.execute(sql)
            rows = cur.fetchmany(max_rows) if max_rows else cur.fetchall()
        except sqlite3.DatabaseError as exc:
            msg = str(exc)
            if "not authorized" in msg or "readonly" in msg or "read-only" in msg:
                raise ReadOnlyViolation(f"refused by the read-only connection: {msg}") from None
            raise SelfloopError(f"SQL error: {msg}") from None
        except sqlite3.ProgrammingError as exc:  # e.g. several statements
            raise ReadOnlyViolation(f"refused: {exc}") from None
        columns = [d[0] for d in cur.description or []]
        return Result(columns, [tuple(r) for r in rows])
    finally:
        conn.close()


def _run_postgres(url: str, sql: str, timeout_ms: int, max_rows: int | None) -> Result:
    from selfloop.db.engine import make_engine

    engine = make_engine(url)
    raw = engine.raw_connection()  # the driver's own cursor: no bind-parameter parsing of the user's text
    try:
        cur = raw.cursor()
        cur.execute("SET TRANSACTION READ ONLY")
        cur.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
        try:
            cur.execute(sql)
        except Exception as exc:  # psycopg.Error; its sqlstate tells a refused write from a plain error
            msg = str(exc).strip().splitlines()[0]
            if getattr(exc, "sqlstate", None) == "25006":  # read_only_sql_transaction
                raise ReadOnlyViolation(f"refused by the read-only transaction: {msg}") from None
            raise SelfloopError(f"SQL error: {msg}") from None
        columns = [d[0] for d in cur.description or []]
        rows = (cur.fetchmany(max_rows) if max_rows else cur.fetchall()) if cur.description else []
        return Result(columns, [tuple(r) for r in rows])
    finally:
        raw.rollback()
        raw.close()
        engine.dispose()

"""SQLAlchemy engines for readers of the store: the dashboard and the metrics server. Every connection cannot
write: on SQLite a `sqlite_readonly` connection; on PostgreSQL a read-only session (`default_transaction_read_only`)
with a statement timeout, whose role must be a reader role where the text it runs could come from a user."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from selfloop.db.engine import normalise_url, safe_url, sqlite_path
from selfloop.db.reader_role import check_reader_role
from selfloop.db.sqlite_readonly import connect_sqlite_readonly
from selfloop.errors import ReadOnlyViolation, SelfloopError

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine


def reader_engine(url: str, *, timeout_ms: int = 30000, require_reader_role: bool = True) -> Engine:
    """An SQLAlchemy engine whose every connection is one of the read-only connections above.

    SQLite: `connect_sqlite_readonly` (the authorizer refuses any write, whatever the statement).
    PostgreSQL: sessions are read-only with a statement timeout; with `require_reader_role` (where user text
    reaches the database: the dashboard's SQL page) the role must also pass `check_reader_role`, checked on each
    new connection, since a writer role could turn the read-only setting off. A bad URL or a role that can write
    is refused here. Without it (the metrics server, which runs only its own queries as the loop's role) a write
    is still refused by the read-only session.
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
        def _deadline(conn: Connection, _cursor: object, _statement: object, _params: object, _context: object,
                      _many: object) -> None:
            raw: Any = conn.connection.dbapi_connection  # the read-only connection of connect_sqlite_readonly
            raw.deadline = time.monotonic() + timeout_ms / 1000
    else:
        options = f"-c default_transaction_read_only=on -c statement_timeout={int(timeout_ms)}"
        engine = create_engine(parsed, pool_pre_ping=True, connect_args={"options": options, "connect_timeout": 10})

        if require_reader_role:
            @event.listens_for(engine, "connect")
            def _check(dbapi_conn: Any, _record: object) -> None:  # a psycopg connection
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
        engine.dispose()
        cause = getattr(exc, "orig", None) or exc
        if isinstance(cause, ReadOnlyViolation):
            raise cause from None
        raise SelfloopError(f"cannot open {safe_url(url)} read-only: {str(cause).strip().splitlines()[0]}") from None
    return engine

"""One writer process per database: a lock file next to an SQLite database, an advisory lock on PostgreSQL."""

from __future__ import annotations

import fcntl
import os
import zlib
from pathlib import Path

from sqlalchemy import text

from selfloop.db.engine import Database, sqlite_path
from selfloop.errors import LockedError

ADVISORY_KEY = zlib.crc32(b"selfloop-daemon")  # the same key in every process that writes


class DatabaseLock:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._file = None
        self._conn = None

    @property
    def path(self) -> Path | None:
        path = sqlite_path(self.db.url)
        return path.with_name(path.name + ".lock") if path is not None else None

    def acquire(self) -> DatabaseLock:
        path = self.path
        if path is not None:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            handle = os.fdopen(fd, "r+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = handle.read().strip() or "another process"
                handle.close()
                raise LockedError(f"{self.db.url} is in use by {holder} (lock {path}); only one selfloop process writes to a database") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}\n")
            handle.flush()
            self._file = handle
            return self
        conn = self.db.engine.connect()
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}).scalar()
        conn.commit()
        if not got:
            holder = conn.execute(
                text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = :k AND granted"),
                {"k": ADVISORY_KEY},
            ).scalar()
            conn.close()
            raise LockedError(f"the database is in use (PostgreSQL backend pid {holder} holds the advisory lock); "
                              "only one selfloop process writes to a database")
        self._conn = conn
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._conn is not None:
            self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
            self._conn.close()
            self._conn = None

    def __enter__(self) -> DatabaseLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

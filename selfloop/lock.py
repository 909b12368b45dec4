"""One writer per loop, fenced.

The lock keeps a second writer of the same loop out, while other loops run beside it on the same
database: on SQLite, an open-file-description lock on one byte of the database file itself (at an offset
derived from the loop's name, far above the bytes SQLite locks), so that every name of the file (a symlink, a
bind mount of the file or of its directory) reaches the same lock; on PostgreSQL, an advisory lock keyed by
the loop.

A lock can still be lost without its holder noticing: the advisory lock's connection killed by
`pg_terminate_backend`, a lock file deleted by hand. So the lock is also a lease with a fencing token
(`writer_leases`): taking the lock raises the loop's token by one, and every write transaction of
the holder checks, just before it commits, that the token is still its own. A writer that lost its
lock to another process therefore stops with `LockLost` at its next commit and never interleaves.
On PostgreSQL the check reads the lease row FOR SHARE, so a take-over waits for (or is seen by) a
commit in flight; on SQLite writers' transactions are serialised by BEGIN IMMEDIATE.
"""

from __future__ import annotations

import os
import secrets
import socket
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger
from sqlalchemy import Connection, select, text, update
from sqlalchemy.orm import Session

from selfloop.db import file_locks
from selfloop.db.engine import Database, check_single_link, sqlite_path
from selfloop.db.models import WriterLease
from selfloop.errors import LockedError, LockLost

if TYPE_CHECKING:
    from sqlalchemy.sql.dml import Insert


def _int4(data: bytes) -> int:
    """crc32 as PostgreSQL's signed int4."""
    value = zlib.crc32(data)
    return value - (1 << 32) if value >= 1 << 31 else value


ADVISORY_CLASS = _int4(b"selfloop-loop")  # first key of every loop's advisory lock

# The role of the session that holds an advisory lock (class c, key o) in this database, if any, and whether
# that role may write the leases (a writer of selfloop's tables, not a reader).
_HOLDER_ROLE = """
SELECT a.usename, has_table_privilege(a.usesysid, 'writer_leases', 'UPDATE')
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = CAST(:c AS int4)::oid AND l.objid = CAST(:o AS int4)::oid
LIMIT 1
"""


def _insert_lease(loop: str) -> Insert:
    """INSERT the loop's lease row unless it exists (token 0: not taken yet)."""
    from sqlalchemy.dialects import postgresql

    values = {"loop_name": loop, "token": 0, "host": "", "pid": 0, "kind": "none", "released_at": datetime.now(UTC)}
    return postgresql.insert(WriterLease).values(**values).on_conflict_do_nothing(index_elements=["loop_name"])


def lock_offset(loop: str) -> int:
    """The byte of the database file that stands for `loop`'s writer lock: 40 bits of the name's hash above
    `file_locks.LOOP_BASE` (two loop names share a byte with odds of about one in 10^12)."""
    import hashlib

    return file_locks.LOOP_BASE + int.from_bytes(hashlib.sha256(loop.encode()).digest()[:5], "big")


class LoopLock:
    """The writer lock and fencing lease of one loop. `kind`: what holds it (`models.WRITER_KINDS`: daemon, run,
    track, rm, rename; shown by `selfloop status`)."""

    def __init__(self, db: Database, loop: str, kind: str = "run") -> None:
        from selfloop.db.models import WRITER_KINDS

        if kind not in WRITER_KINDS or kind == "none":
            raise ValueError(f"lock kind {kind!r} is not one of {', '.join(WRITER_KINDS[:-1])}")
        self.db, self.loop, self.kind = db, loop, kind
        self.token: int | None = None
        self._fd: int | None = None
        self._conn: Connection | None = None
        self._key: int | None = None

    @property
    def path(self) -> Path | None:
        """The SQLite database file whose byte the lock takes (None on PostgreSQL)."""
        return sqlite_path(self.db.url)

    # -- taking and giving back ------------------------------------------------------------------
    def acquire(self) -> LoopLock:
        if self.path is not None:
            self._lock_file(self.path)
        else:
            self._lock_advisory()
        try:
            self.token = self._take_lease()
        except BaseException:
            self._unlock()
            raise
        self.db.fence = self.check
        return self

    def _lock_file(self, path: Path) -> None:
        """Lock the loop's byte of the database file itself (`selfloop.db.file_locks`): the file's identity holds
        the lock, not a name, so no second path to the file (a bind mount of the file alone included) reaches a
        second lock."""
        check_single_link(Path(os.path.realpath(path)))
        fd = file_locks.descriptor(path)
        if not file_locks.try_lock(fd, lock_offset(self.loop)):
            file_locks.park(fd)
            raise LockedError(f"loop {self.loop!r} is in use by {self._lease_holder()} (lock on {path}); "
                              "one process writes a loop at a time")
        self._fd = fd

    def _lease_holder(self) -> str:
        """Who holds the loop, as its lease row says (read without the fence: this process holds nothing yet)."""
        try:
            with self.db.engine.connect() as conn:
                lease = conn.execute(select(WriterLease.kind, WriterLease.pid, WriterLease.host, WriterLease.released_at)
                                     .where(WriterLease.loop_name == self.loop)).one_or_none()
        except Exception:  # noqa: BLE001 - the refusal stands; only its wording is lost
            return "another process"
        if lease is None or lease.released_at is not None:
            return "another process"
        return f"{lease.kind} pid {lease.pid} on {lease.host}"

    def _lock_advisory(self) -> None:
        """pg_try_advisory_lock on the loop's key, chosen while the loop's lease row is locked, so that writers
        of the loop queue here. Readers may call pg_advisory_lock too (PostgreSQL grants it to everyone), but
        they cannot hold that row: a key held by a role that cannot write the leases is a reader's, and the
        writer moves to a fresh random key, recorded in the row for the next writer."""
        conn = self.db.engine.connect()
        try:
            with conn.begin():
                conn.execute(_insert_lease(self.loop))
                stored = conn.execute(select(WriterLease.lock_key).where(WriterLease.loop_name == self.loop)
                                      .with_for_update()).scalar()
                key = stored if stored is not None else _int4(self.loop.encode())
                if not self._try(conn, key):
                    holder, writes = conn.execute(text(_HOLDER_ROLE), {"c": ADVISORY_CLASS, "o": key}).one_or_none() or (None, True)
                    if writes:  # another writer (or a holder that cannot be seen): the loop is taken
                        raise LockedError(f"loop {self.loop!r} is in use by {self._holder(conn)}; one process writes a loop at a time")
                    key = self._fresh_key(conn)
                    logger.warning("loop {}: its lock key was held by role {!r}, which is not a writer; took a fresh key",
                                   self.loop, holder)
                    conn.execute(update(WriterLease).where(WriterLease.loop_name == self.loop).values(lock_key=key))
        except BaseException:
            conn.close()
            raise
        self._conn, self._key = conn, key

    @staticmethod
    def _try(conn: Connection, key: int) -> bool:
        return bool(conn.execute(text("SELECT pg_try_advisory_lock(:c, :o)"), {"c": ADVISORY_CLASS, "o": key}).scalar())

    def _fresh_key(self, conn: Connection) -> int:
        for _ in range(8):  # a reader cannot know a key drawn now; 8 tries only guard against a collision
            key = _int4(secrets.token_bytes(8))
            if self._try(conn, key):
                return key
        raise LockedError(f"loop {self.loop!r}: could not take a fresh advisory lock key")

    def _holder(self, conn: Connection) -> str:
        """Who holds the loop, read on the locking connection (a session of this Database would run its fence)."""
        lease = conn.execute(select(WriterLease.kind, WriterLease.pid, WriterLease.host, WriterLease.released_at)
                             .where(WriterLease.loop_name == self.loop)).one_or_none()
        if lease is None or lease.released_at is not None:
            return "another process"
        return f"{lease.kind} pid {lease.pid} on {lease.host}"

    def _take_lease(self) -> int:
        now = datetime.now(UTC)
        with self.db.session() as session:
            lease = session.get(WriterLease, self.loop, with_for_update=True)
            if lease is None:
                lease = WriterLease(loop_name=self.loop, token=0)
                session.add(lease)
            lease.token += 1
            lease.host, lease.pid, lease.kind = socket.gethostname(), os.getpid(), self.kind
            lease.acquired_at = now
            lease.released_at = None
            session.flush()
            return lease.token

    def release(self) -> None:
        """Give the lease and the lock back (a lease already taken over is left to its new holder)."""
        if self.db.fence == self.check:
            self.db.fence = None
        if self.token is not None:
            try:
                with self.db.session() as session:
                    session.execute(update(WriterLease)
                                    .where(WriterLease.loop_name == self.loop, WriterLease.token == self.token)
                                    .values(released_at=datetime.now(UTC)))
            except Exception:  # noqa: BLE001, S110 - the lock below must go even when the database is unreachable
                pass
            self.token = None
        self._unlock()

    def _unlock(self) -> None:
        if self._fd is not None:
            file_locks.unlock(self._fd, lock_offset(self.loop))
            file_locks.park(self._fd)
            self._fd = None
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:c, :o)"), {"c": ADVISORY_CLASS, "o": self._key})
                self._conn.close()
            except Exception:  # noqa: BLE001 - a killed lock connection has already dropped the lock
                self._conn.invalidate()
            self._conn = None

    # -- the fence ---------------------------------------------------------------------------------
    def check(self, session: Session) -> None:
        """Raise LockLost unless this process still holds the loop's lease (run inside every write transaction)."""
        row = session.execute(
            select(WriterLease.token, WriterLease.kind, WriterLease.pid, WriterLease.host)
            .where(WriterLease.loop_name == self.loop).with_for_update(read=True)
        ).one_or_none()
        if row is None or row.token != self.token:
            holder = f"{row.kind} pid {row.pid} on {row.host}" if row is not None else "nobody"
            raise LockLost(f"lost the writer lock of loop {self.loop!r} to {holder}; stopped before writing "
                           "anything more (committed work is kept)")

    def __enter__(self) -> LoopLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

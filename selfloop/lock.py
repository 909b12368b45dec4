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
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from selfloop.db import file_locks, leases
from selfloop.db.engine import Database, check_single_link, sqlite_path
from selfloop.errors import LockedError, LockLost

if TYPE_CHECKING:
    pass


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
                return leases.holder(conn, self.loop)
        except Exception:  # noqa: BLE001 - the refusal stands; only its wording is lost
            return "another process"

    def _lock_advisory(self) -> None:
        """pg_try_advisory_lock on the loop's key, chosen while the loop's lease row is locked, so that writers
        of the loop queue here. Readers may call pg_advisory_lock too (PostgreSQL grants it to everyone), but
        they cannot hold that row: a key held by a role that cannot write the leases is a reader's, and the
        writer moves to a fresh random key, recorded in the row for the next writer."""
        conn = self.db.engine.connect()
        try:
            with conn.begin():
                stored = leases.lock_key_for_update(conn, self.loop)
                key = stored if stored is not None else leases.int4(self.loop.encode())
                if not leases.try_advisory(conn, key):
                    holder, writes = leases.advisory_holder(conn, key)
                    if writes:  # another writer (or a holder that cannot be seen): the loop is taken
                        raise LockedError(f"loop {self.loop!r} is in use by {leases.holder(conn, self.loop)}; "
                                          "one process writes a loop at a time")
                    key = self._fresh_key(conn)
                    logger.warning("loop {}: its lock key was held by role {!r}, which is not a writer; took a fresh key",
                                   self.loop, holder)
                    leases.set_lock_key(conn, self.loop, key)
        except BaseException:
            conn.close()
            raise
        self._conn, self._key = conn, key

    def _fresh_key(self, conn: Connection) -> int:
        for _ in range(8):  # a reader cannot know a key drawn now; 8 tries only guard against a collision
            key = leases.int4(secrets.token_bytes(8))
            if leases.try_advisory(conn, key):
                return key
        raise LockedError(f"loop {self.loop!r}: could not take a fresh advisory lock key")

    def _take_lease(self) -> int:
        with self.db.session() as session:
            return leases.take(session, self.loop, self.kind)

    def release(self) -> None:
        """Give the lease and the lock back (a lease already taken over is left to its new holder)."""
        if self.db.fence == self.check:
            self.db.fence = None
        if self.token is not None:
            try:
                with self.db.session() as session:
                    leases.release(session, self.loop, self.token)
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
                leases.advisory_unlock(self._conn, self._key)
                self._conn.close()
            except Exception:  # noqa: BLE001 - a killed lock connection has already dropped the lock
                self._conn.invalidate()
            self._conn = None

    # -- the fence ---------------------------------------------------------------------------------
    def check(self, session: Session) -> None:
        """Raise LockLost unless this process still holds the loop's lease (run inside every write transaction)."""
        row = leases.current(session, self.loop)
        if row is None or row.token != self.token:
            holder = f"{row.kind} pid {row.pid} on {row.host}" if row is not None else "nobody"
            raise LockLost(f"lost the writer lock of loop {self.loop!r} to {holder}; stopped before writing "
                           "anything more (committed work is kept)")

    def __enter__(self) -> LoopLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

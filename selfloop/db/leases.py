"""The statements of the writer lock (`selfloop.lock`): the loop's lease row (`writer_leases`: its fencing token and
who holds it) and, on PostgreSQL, its advisory lock. The lock decides when each runs; what each reads and writes is
here."""

from __future__ import annotations

import os
import socket
import zlib
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy import Connection, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from selfloop.db.models import WriterLease


def int4(data: bytes) -> int:
    """crc32 as PostgreSQL's signed int4."""
    value = zlib.crc32(data)
    return value - (1 << 32) if value >= 1 << 31 else value


ADVISORY_CLASS = int4(b"selfloop-loop")  # first key of every loop's advisory lock

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


class Holder(NamedTuple):
    token: int
    kind: str
    pid: int
    host: str


def holder(conn: Connection | Session, loop: str) -> str:
    """Who holds the loop, as its lease row says: "run pid 12 on host", or "another process" (no live lease)."""
    lease = conn.execute(select(WriterLease.kind, WriterLease.pid, WriterLease.host, WriterLease.released_at)
                         .where(WriterLease.loop_name == loop)).one_or_none()
    if lease is None or lease.released_at is not None:
        return "another process"
    return f"{lease.kind} pid {lease.pid} on {lease.host}"


def lock_key_for_update(conn: Connection, loop: str) -> int | None:
    """Create the loop's lease row unless it exists (token 0: not taken yet), lock it, and read the advisory key
    recorded there (None: the loop's default key)."""
    values = {"loop_name": loop, "token": 0, "host": "", "pid": 0, "kind": "none", "released_at": datetime.now(UTC)}
    conn.execute(postgresql.insert(WriterLease).values(**values).on_conflict_do_nothing(index_elements=["loop_name"]))
    return conn.execute(select(WriterLease.lock_key).where(WriterLease.loop_name == loop).with_for_update()).scalar()


def set_lock_key(conn: Connection, loop: str, key: int) -> None:
    conn.execute(update(WriterLease).where(WriterLease.loop_name == loop).values(lock_key=key))


def try_advisory(conn: Connection, key: int) -> bool:
    return bool(conn.execute(text("SELECT pg_try_advisory_lock(:c, :o)"), {"c": ADVISORY_CLASS, "o": key}).scalar())


def advisory_unlock(conn: Connection, key: int | None) -> None:
    conn.execute(text("SELECT pg_advisory_unlock(:c, :o)"), {"c": ADVISORY_CLASS, "o": key})


def advisory_holder(conn: Connection, key: int) -> tuple[str | None, bool]:
    """The role holding the advisory key and whether it may write the leases ((None, True): no holder seen)."""
    found = conn.execute(text(_HOLDER_ROLE), {"c": ADVISORY_CLASS, "o": key}).one_or_none()
    return (found[0], bool(found[1])) if found is not None else (None, True)


def take(session: Session, loop: str, kind: str) -> int:
    """Raise the loop's fencing token by one and record this process as its holder; the new token."""
    lease = session.get(WriterLease, loop, with_for_update=True)
    if lease is None:
        lease = WriterLease(loop_name=loop, token=0)
        session.add(lease)
    lease.token += 1
    lease.host, lease.pid, lease.kind = socket.gethostname(), os.getpid(), kind
    lease.acquired_at = datetime.now(UTC)
    lease.released_at = None
    session.flush()
    return lease.token


def release(session: Session, loop: str, token: int) -> None:
    """Mark the lease released, unless another holder has taken it over since (its token moved on)."""
    session.execute(update(WriterLease).where(WriterLease.loop_name == loop, WriterLease.token == token)
                    .values(released_at=datetime.now(UTC)))


def current(session: Session, loop: str) -> Holder | None:
    """The lease's token and holder, read FOR SHARE (PostgreSQL): a take-over waits for a commit in flight."""
    found = session.execute(select(WriterLease.token, WriterLease.kind, WriterLease.pid, WriterLease.host)
                            .where(WriterLease.loop_name == loop).with_for_update(read=True)).one_or_none()
    return Holder(*found) if found is not None else None

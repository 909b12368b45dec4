"""The statements of the store's upkeep (`selfloop.maintenance`): which checkpoints retention must keep, marking the
others deleted, and folding SQLite's write-ahead log back into the database file."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from selfloop.db.engine import Database
from selfloop.db.models import Checkpoint, Iteration, Loop


def protected_checkpoints(session: Session, keep_newest: int) -> set[int]:
    """Checkpoints retention keeps: every promoted one, every loop's start and current policy, those of
    iterations not done, and the `keep_newest` newest others."""
    keep = set(session.scalars(select(Iteration.output_checkpoint_id).where(Iteration.promoted.is_(True))))
    for start, current in session.execute(select(Loop.start_checkpoint_id, Loop.current_checkpoint_id)):
        keep |= {start, current}
    keep |= set(session.scalars(select(Iteration.base_checkpoint_id).where(Iteration.status != "done")))
    keep |= set(session.scalars(select(Iteration.output_checkpoint_id).where(Iteration.status != "done")))
    others = session.scalars(select(Checkpoint.id).where(Checkpoint.status == "ok").order_by(Checkpoint.id.desc())).all()
    keep |= set([c for c in others if c not in keep][:keep_newest])
    return {c for c in keep if c is not None}


def mark_deleted(session: Session, keep: set[int]) -> list[str]:
    """Mark every stored checkpoint outside `keep` deleted; the paths of all rows marked deleted (those marked
    before too: a crash after their commit left their directories)."""
    doomed = session.scalars(select(Checkpoint).where(Checkpoint.status == "ok", Checkpoint.id.not_in(keep))).all()
    for ckpt in doomed:
        ckpt.status, ckpt.deleted_at = "deleted", datetime.now(UTC)
    return [c.path for c in doomed] + list(session.scalars(select(Checkpoint.path).where(Checkpoint.status == "deleted")))


def fold_wal(db: Database) -> bool:
    """PRAGMA wal_checkpoint(TRUNCATE) on an SQLite store, outside any transaction (a checkpoint cannot run inside
    one); whether readers kept part of the log (it is folded on a later pass). False on PostgreSQL."""
    if db.dialect != "sqlite":
        return False
    raw = db.engine.raw_connection()
    try:
        busy, _, _ = raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return bool(busy)
    finally:
        raw.close()


def trained_checkpoints(session: Session, loop_id: int) -> dict[int, str]:
    """Checkpoint id -> stored path of every checkpoint the loop's iterations trained."""
    return {i: p for i, p in session.execute(select(Checkpoint.id, Checkpoint.path).join(
        Iteration, Iteration.output_checkpoint_id == Checkpoint.id).where(Iteration.loop_id == loop_id))}


def move_checkpoint(session: Session, checkpoint_id: int, path: str) -> None:
    """Record a checkpoint's new stored path (its directory moved with a renamed loop)."""
    session.execute(update(Checkpoint).where(Checkpoint.id == checkpoint_id).values(path=path))

"""Maintenance jobs the daemon schedules. Each is one pass that returns; tests call them directly.

- backup: a consistent copy of an SQLite database through SQLite's online backup API, newest N kept
  (PostgreSQL: use pg_dump; nothing is done here).
- retention: checkpoint directories are deleted except promoted ones, every loop's start and current
  policy, starting policies of unfinished iterations, and the newest K others. The row is marked
  deleted (committed) before its directory goes, so no row ever points at a missing directory.
- wal_checkpoint: folds SQLite's write-ahead log back into the database file.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger
from sqlalchemy import select

from selfloop.config import Config
from selfloop.db.engine import Database, sqlite_path
from selfloop.db.models import Checkpoint, Iteration, Loop
from selfloop.private import private_dir

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def backup(db: Database, config: Config) -> Path | None:
    source = sqlite_path(db.url)
    if source is None:
        logger.info("backup: PostgreSQL database; back it up with pg_dump")
        return None
    folder = config.state_dir() / "backups"
    private_dir(folder)
    target = folder / f"{source.stem}-{datetime.now(UTC):%Y%m%d-%H%M%S%f}.db"
    fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=config.database.busy_timeout_ms / 1000)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)  # a consistent snapshot, even while the daemon writes
    finally:
        dst.close()
        src.close()
    backups = sorted(folder.glob(f"{source.stem}-*.db"))
    for old in backups[: -config.schedule.backups_keep]:
        old.unlink()
    logger.info("backup: {} ({} kept)", target, min(len(backups), config.schedule.backups_keep))
    return target


def protected_checkpoints(session: Session, keep_newest: int) -> set[int]:
    keep = set(session.scalars(select(Iteration.output_checkpoint_id).where(Iteration.promoted.is_(True))))
    for start, current in session.execute(select(Loop.start_checkpoint_id, Loop.current_checkpoint_id)):
        keep |= {start, current}
    keep |= set(session.scalars(select(Iteration.base_checkpoint_id).where(Iteration.status != "done")))
    keep |= set(session.scalars(select(Iteration.output_checkpoint_id).where(Iteration.status != "done")))
    others = session.scalars(select(Checkpoint.id).where(Checkpoint.status == "ok").order_by(Checkpoint.id.desc())).all()
    keep |= set([c for c in others if c not in keep][:keep_newest])
    return {c for c in keep if c is not None}


def retention(db: Database, config: Config) -> list[Path]:
    with db.session() as session:
        keep = protected_checkpoints(session, config.schedule.keep_checkpoints)
        doomed = session.scalars(select(Checkpoint).where(Checkpoint.status == "ok", Checkpoint.id.not_in(keep))).all()
        for ckpt in doomed:
            ckpt.status, ckpt.deleted_at = "deleted", datetime.now(UTC)
        # Directories of rows already marked deleted (a crash after the commit below) go too.
        paths = [config.checkpoint_dir(c.path) for c in doomed] + [
            config.checkpoint_dir(p) for p in session.scalars(select(Checkpoint.path).where(Checkpoint.status == "deleted"))
        ]
    removed = []
    for path in dict.fromkeys(paths):
        if path.exists():
            shutil.rmtree(path)
            removed.append(path)
    if removed:
        logger.info("retention: deleted {} checkpoint directories", len(removed))
    return removed


def wal_checkpoint(db: Database) -> None:
    if db.dialect != "sqlite":
        return
    raw = db.engine.raw_connection()  # outside any transaction: a checkpoint cannot run inside one
    try:
        busy, _, _ = raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            logger.info("wal_checkpoint: readers busy; the log will be folded on a later pass")
    finally:
        raw.close()




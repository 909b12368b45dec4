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

from selfloop.config import Config
from selfloop.db import upkeep
from selfloop.db.engine import Database, sqlite_path
from selfloop.private import private_dir

if TYPE_CHECKING:
    pass


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


def retention(db: Database, config: Config) -> list[Path]:
    with db.session() as session:
        # Directories of rows already marked deleted (a crash after the commit below) go too.
        paths = [config.checkpoint_dir(p) for p in upkeep.mark_deleted(
            session, upkeep.protected_checkpoints(session, config.schedule.keep_checkpoints))]
    removed = []
    for path in dict.fromkeys(paths):
        if path.exists():
            shutil.rmtree(path)
            removed.append(path)
    if removed:
        logger.info("retention: deleted {} checkpoint directories", len(removed))
    return removed


def wal_checkpoint(db: Database) -> None:
    if upkeep.fold_wal(db):
        logger.info("wal_checkpoint: readers busy; the log will be folded on a later pass")

"""Running a loop in the foreground: `selfloop run` and `selfloop resume` (the daemon adds triggers,
systemd notification and maintenance around the same `run_iteration` calls)."""

from __future__ import annotations

from loguru import logger

from selfloop.config import Config
from selfloop.db.engine import Database, open_database
from selfloop.errors import Interrupted
from selfloop.lock import DatabaseLock
from selfloop.loop import Outcome, open_loop, run_iteration
from selfloop.manifest import remove_stale_temporaries
from selfloop.private import private_dir
from selfloop.runtime import Runtime
from selfloop.signals import StopFlag


def checkpoints_root(config: Config):  # noqa: ANN201
    return config.state_dir() / "checkpoints"


def prepare(config: Config) -> Database:
    """Open (creating if new) the database and clean what a crash may have left on disk."""
    private_dir(config.state_dir())
    db = open_database(config.database_url(), busy_timeout_ms=config.database.busy_timeout_ms, init=True)
    for path in remove_stale_temporaries(checkpoints_root(config)):
        logger.warning("removed an unfinished checkpoint directory left by a crash: {}", path)
    return db


def run_loop(config: Config, iterations: int | None, stop: StopFlag) -> list[Outcome]:
    """Run up to `iterations` iterations (None: until the loop finishes or a stop is requested)."""
    db = prepare(config)
    outcomes: list[Outcome] = []
    try:
        with DatabaseLock(db):
            open_loop(db, config)
            runtime = Runtime(config)
            try:
                while iterations is None or len(outcomes) < iterations:
                    if stop():
                        break
                    outcome = run_iteration(db, config, runtime, stop)
                    if outcome.status != "done":
                        logger.info("loop {}: {}", outcome.loop, outcome.status)
                        break
                    outcomes.append(outcome)
            except Interrupted as exc:
                logger.warning("{}; committed work is kept: `selfloop resume {}` continues", exc, config.loop.name)
            finally:
                runtime.close()
    finally:
        db.dispose()
    return outcomes

"""The daemon: runs the config's loop until stopped, as a systemd service or by hand.

The loop runs in the main thread, driven by database state: each pass is `run_iteration`, which
resumes whatever a crash or a stop left unfinished. APScheduler (3.x, in-memory job store: nothing
pickled) only decides when the next iteration may start - back to back, every N minutes, or in a
cron window - and runs the maintenance jobs. Around that: one process per database (the lock),
graceful stop on SIGTERM/SIGINT, READY/STATUS/WATCHDOG notifications for systemd.
"""

from __future__ import annotations

import faulthandler
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from loguru import logger

from selfloop import maintenance
from selfloop.config import Config
from selfloop.errors import Interrupted
from selfloop.progress import HEARTBEAT
from selfloop.runner import held
from selfloop.signals import StopFlag
from selfloop.systemd import Notifier, Watchdog, watchdog_interval

if TYPE_CHECKING:
    from selfloop.db.engine import Database


class Daemon:
    def __init__(self, config: Config, stop: StopFlag | None = None) -> None:
        self.config = config
        self.stop = stop or StopFlag()
        self.trigger = threading.Event()  # set when an iteration may start
        self.notifier = Notifier()

    # -- the schedule ---------------------------------------------------------------------------
    def _scheduler(self, db: Database) -> BackgroundScheduler:
        s = self.config.schedule
        scheduler = BackgroundScheduler(timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1})
        if s.mode == "interval":
            scheduler.add_job(self.trigger.set, IntervalTrigger(minutes=s.every_minutes), id="iteration",
                              next_run_time=datetime.now(UTC))
        elif s.mode == "cron":
            scheduler.add_job(self.trigger.set, CronTrigger.from_crontab(s.cron, timezone=UTC), id="iteration")
        jobs = [
            ("backup", s.backup_every_minutes, lambda: maintenance.backup(db, self.config)),
            ("retention", s.retention_every_minutes, lambda: maintenance.retention(db, self.config)),
            ("wal_checkpoint", s.wal_checkpoint_every_minutes, lambda: maintenance.wal_checkpoint(db)),
        ]
        for name, minutes, job in jobs:
            if minutes:
                scheduler.add_job(_logged(name, job), IntervalTrigger(minutes=minutes), id=name)
        return scheduler

    def _wait_for_trigger(self) -> bool:
        """Continuous mode starts at once; otherwise wait for the schedule. False when stopping."""
        if self.config.schedule.mode == "continuous":
            return not self.stop()
        self._status(f"{self.config.loop.name}: waiting for the schedule ({self.config.schedule.mode})", log=True)
        while not self.stop():
            HEARTBEAT.beat()  # waiting is not hanging
            if self.trigger.wait(timeout=1.0):
                self.trigger.clear()
                return True
        return False

    # -- status -------------------------------------------------------------------------------
    def _status(self, line: str, log: bool = False) -> None:
        """systemd's STATUS line; phases and iterations log themselves, so only news is logged here."""
        self.notifier.status(line)
        if log:
            logger.info(line)

    # -- the main loop ------------------------------------------------------------------------
    def run(self) -> int:
        faulthandler.enable(file=sys.stderr, all_threads=True)
        self.stop.install()
        reason = "stopped"
        with held(self.config, "daemon") as loop:
            scheduler, watchdog = self._scheduler(loop.db), None
            try:
                scheduler.start()
                self.notifier.ready(f"{self.config.loop.name}: started")  # before the model loads: systemd waits less
                interval = watchdog_interval()
                watchdog = Watchdog(self.notifier, interval, self.config.loop.stall_timeout_s) if interval else None
                if watchdog:
                    watchdog.start()
                loop.start()
                while self._wait_for_trigger():
                    outcome = loop.iteration(self.stop, lambda name, number, phase: self._status(
                        f"{name}: iteration {number}, {phase}"))
                    if outcome.status != "done" or outcome.last:
                        # After the last iteration, stop now rather than at the next trigger (hours away on a schedule).
                        reason = f"loop {outcome.loop} is {'finished' if outcome.last else outcome.status}"
                        break
                    self._status(f"{outcome.loop}: iteration {outcome.iteration} done")
            except Interrupted as exc:
                reason = f"{exc}; committed work is kept and resumes on the next start"
            except BaseException as exc:
                reason = f"failed: {exc.__class__.__name__}"
                raise
            finally:
                self.notifier.stopping(f"{self.config.loop.name}: {reason}")
                logger.info("daemon stopping: {}", reason)
                if scheduler.running:  # a running backup or retention pass ends before the lock goes
                    scheduler.shutdown(wait=True)
                if watchdog:
                    watchdog.stop()
        return 0


def _logged(name: str, job: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            job()
        except Exception as exc:  # noqa: BLE001 - a failed maintenance pass must not take the daemon down
            logger.error("maintenance job {} failed: {}: {}", name, exc.__class__.__name__, exc)

    return run

"""The daemon: runs the config's loop until stopped, as a systemd service or by hand.

The loop runs in the main thread, driven by database state: each pass is `run_iteration`, which
resumes whatever a crash or a stop left unfinished. APScheduler (3.x, in-memory job store: nothing
pickled) only decides when the next iteration may start - back to back, every N minutes, or in a
cron window - and runs the maintenance jobs. Around that: one process per database (the lock),
graceful stop on SIGTERM/SIGINT, READY/STATUS/WATCHDOG notifications for systemd.
"""

from __future__ import annotations

import faulthandler
import os
import socket
import sys
import threading
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from loguru import logger
from sqlalchemy import update

from selfloop import maintenance
from selfloop.config import Config
from selfloop.db.models import Daemon as DaemonRow
from selfloop.errors import Interrupted, LockLost
from selfloop.loop import open_loop, run_iteration
from selfloop.progress import HEARTBEAT
from selfloop.runner import prepare, serve_metrics, start_runtime, stop_metrics, take_loop
from selfloop.signals import StopFlag
from selfloop.systemd import Notifier, Watchdog, watchdog_interval
from selfloop.tracking import Tracking


class Daemon:
    def __init__(self, config: Config, stop: StopFlag | None = None) -> None:
        self.config = config
        self.stop = stop or StopFlag()
        self.trigger = threading.Event()  # set when an iteration may start
        self.notifier = Notifier()
        self.status_line = "starting"
        self.row_id: int | None = None

    # -- the schedule ---------------------------------------------------------------------------
    def _scheduler(self, db) -> BackgroundScheduler:  # noqa: ANN001
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
        scheduler.add_job(lambda: self._beat(db), IntervalTrigger(seconds=30), id="daemon_heartbeat")
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
        self.status_line = line
        self.notifier.status(line)
        if log:
            logger.info(line)

    def _beat(self, db) -> None:  # noqa: ANN001
        with db.session() as session:
            session.execute(update(DaemonRow).where(DaemonRow.id == self.row_id)
                            .values(heartbeat_at=datetime.now(UTC), status=self.status_line))

    # -- the main loop ------------------------------------------------------------------------
    def run(self) -> int:
        faulthandler.enable(file=sys.stderr, all_threads=True)
        self.stop.install()
        db = prepare(self.config)
        lock = take_loop(db, self.config, "daemon")
        runtime, watchdog, scheduler, metrics, tracking = None, None, None, None, None
        code, reason = 0, "stopped"
        try:
            metrics = serve_metrics(self.config)
            with db.session() as session:
                row = DaemonRow(host=socket.gethostname(), pid=os.getpid(), status="starting")
                session.add(row)
                session.flush()
                self.row_id = row.id
            scheduler = self._scheduler(db)
            scheduler.start()
            self.notifier.ready(f"{self.config.loop.name}: started")
            interval = watchdog_interval()
            watchdog = Watchdog(self.notifier, interval, self.config.loop.stall_timeout_s) if interval else None
            if watchdog:
                watchdog.start()
            runtime = start_runtime(self.config)
            open_loop(db, self.config)
            tracking = Tracking(db, self.config)

            def on_phase(loop: str, number: int, phase: str) -> None:
                self._status(f"{loop}: iteration {number}, {phase}")
                tracking.poke()  # the phase before this one is done: trackers catch up in the background

            while self._wait_for_trigger():
                outcome = run_iteration(db, self.config, runtime, self.stop, on_phase=on_phase)
                tracking.poke()
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
            if scheduler is not None:
                scheduler.shutdown(wait=True)  # a running backup or retention pass ends before the lock goes
            if watchdog:
                watchdog.stop()
            if runtime is not None:
                runtime.close()
            if tracking is not None:
                tracking.close()
            stop_metrics(metrics)
            try:
                with db.session() as session:
                    session.execute(update(DaemonRow).where(DaemonRow.id == self.row_id)
                                    .values(stopped_at=datetime.now(UTC), status=reason))
            except LockLost:
                pass  # the loop's new writer owns the store now: write nothing more
            lock.release()
            db.dispose()
        return code


def _logged(name: str, job):  # noqa: ANN001, ANN202
    def run() -> None:
        try:
            job()
        except Exception as exc:  # a failed maintenance pass must not take the daemon down
            logger.error("maintenance job {} failed: {}: {}", name, exc.__class__.__name__, exc)

    return run

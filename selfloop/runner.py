"""Running a loop in the foreground: `selfloop run` and `selfloop resume` (the daemon adds triggers,
systemd notification and maintenance around the same `run_iteration` calls)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from selfloop.config import Config
from selfloop.db.engine import Database, open_database
from selfloop.errors import Interrupted
from selfloop.inputs import check_inputs, check_model_limits
from selfloop.lock import LoopLock
from selfloop.loop import Outcome, open_loop, run_iteration
from selfloop.manifest import remove_stale_temporaries
from selfloop.private import private_dir
from selfloop.runtime import Runtime
from selfloop.tracking import Tracking

if TYPE_CHECKING:
    from selfloop.metrics_http import MetricsServer


def loop_checkpoints(config: Config) -> Path:
    """Where the config's loop writes its checkpoints (one directory per loop)."""
    return config.state_dir() / "checkpoints" / config.loop.name


def prepare(config: Config) -> Database:
    """Check the loop's input files, then open (creating if new) the database. Nothing is written
    before the inputs are known to be good, so a bad file never leaves a loop row behind."""
    check_inputs(config)
    private_dir(config.state_dir())
    return open_database(config.database_url(), busy_timeout_ms=config.database.busy_timeout_ms, init=True)


def take_loop(db: Database, config: Config, kind: str) -> LoopLock:
    """Take the loop's writer lock, then clean what a crash of an earlier holder left on disk.

    The cleanup runs only under the lock and only in this loop's own directory: a process that is
    refused, or that runs another loop, never touches a running writer's unfinished checkpoint.
    """
    lock = LoopLock(db, config.loop.name, kind).acquire()
    try:
        for path in remove_stale_temporaries(loop_checkpoints(config)):
            logger.warning("removed an unfinished checkpoint directory left by a crash: {}", path)
    except BaseException:
        lock.release()
        raise
    return lock


def serve_metrics(config: Config) -> MetricsServer | None:
    """The /metrics and /health server when the config asks for it (None otherwise)."""
    if not config.metrics.enabled:
        return None
    from selfloop.metrics_http import MetricsServer

    return MetricsServer(config).start()


def stop_metrics(server: MetricsServer | None) -> None:
    if server is not None:
        server.stop()


def start_runtime(config: Config) -> Runtime:
    """The runtime with its base model resolved and checked before the loop row exists, so an
    unreachable or unsuitable model never leaves a loop behind that a fixed config cannot reuse."""
    runtime = Runtime(config)
    check_model_limits(config, runtime.model.path)
    return runtime


class Held:
    """A loop held by this process (`held`): its store and writer lock now; its runtime and trackers once
    `start()` has loaded the model and opened the loop row."""

    def __init__(self, db: Database, config: Config, lock: LoopLock) -> None:
        self.db, self.config, self.lock = db, config, lock
        self.runtime: Runtime | None = None
        self.tracking: Tracking | None = None

    def start(self) -> None:
        self.runtime = start_runtime(self.config)
        open_loop(self.db, self.config)
        self.tracking = Tracking(self.db, self.config)

    def iteration(self, stop: Callable[[], bool], on_phase: Callable[[str, int, str], None] | None = None) -> Outcome:
        """One iteration; trackers catch up as each phase starts and after the iteration."""
        if self.runtime is None or self.tracking is None:
            raise RuntimeError("Runner.iteration before start()")
        tracking = self.tracking

        def phase_started(loop: str, number: int, phase: str) -> None:
            tracking.poke()  # the phase before this one is done: trackers catch up in the background
            if on_phase is not None:
                on_phase(loop, number, phase)

        outcome = run_iteration(self.db, self.config, self.runtime, stop, on_phase=phase_started)
        tracking.poke()
        return outcome


@contextmanager
def held(config: Config, kind: str) -> Iterator[Held]:
    """The one set-up and tear-down of every process that runs a loop (`selfloop run`, `resume`, the daemon):
    inputs checked, the store opened, the writer lock taken, metrics served; on the way out (an error or a stop
    included) the runtime and trackers closed, metrics stopped, the lock released and the store closed."""
    db = prepare(config)
    try:
        lock = take_loop(db, config, kind)
        metrics = None
        loop = Held(db, config, lock)
        try:
            metrics = serve_metrics(config)
            yield loop
        finally:
            if loop.runtime is not None:
                loop.runtime.close()
            if loop.tracking is not None:
                loop.tracking.close()
            stop_metrics(metrics)
            lock.release()
    finally:
        db.dispose()


def run_loop(config: Config, iterations: int | None, stop: Callable[[], bool], *,
             on_phase: Callable[[str, int, str], None] | None = None,
             on_iteration: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run up to `iterations` iterations (None: until the loop finishes or a stop is requested).

    on_phase(loop, iteration, phase) is called as each phase starts, on_iteration(outcome) after each finished
    iteration (the Python API's callbacks); an exception they raise stops the loop like any failure."""
    outcomes: list[Outcome] = []
    with held(config, "run") as loop:
        loop.start()
        try:
            while iterations is None or len(outcomes) < iterations:
                if stop():
                    break
                outcome = loop.iteration(stop, on_phase)
                if outcome.status != "done":
                    logger.info("loop {}: {}", outcome.loop, outcome.status)
                    break
                outcomes.append(outcome)
                if on_iteration is not None:
                    on_iteration(outcome)
        except Interrupted as exc:
            logger.warning("{}; committed work is kept: `selfloop resume {}` continues", exc, config.loop.name)
    return outcomes

"""Running a loop in the foreground: `selfloop run` and `selfloop resume` (the daemon adds triggers,
systemd notification and maintenance around the same `run_iteration` calls)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
from selfloop.signals import StopFlag
from selfloop.tracking import Tracking


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


def serve_metrics(config: Config):  # noqa: ANN201
    """The /metrics and /health server when the config asks for it (None otherwise)."""
    if not config.metrics.enabled:
        return None
    from selfloop.metrics_http import MetricsServer

    return MetricsServer(config).start()


def stop_metrics(server) -> None:  # noqa: ANN001
    if server is not None:
        server.stop()


def start_runtime(config: Config) -> Runtime:
    """The runtime with its base model resolved and checked before the loop row exists, so an
    unreachable or unsuitable model never leaves a loop behind that a fixed config cannot reuse."""
    runtime = Runtime(config)
    check_model_limits(config, runtime.model.path)
    return runtime


def run_loop(config: Config, iterations: int | None, stop: StopFlag, *,
             on_phase: Callable[[str, int, str], None] | None = None,
             on_iteration: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run up to `iterations` iterations (None: until the loop finishes or a stop is requested).

    on_phase(loop, iteration, phase) is called as each phase starts, on_iteration(outcome) after each finished
    iteration (the Python API's callbacks); an exception they raise stops the loop like any failure."""
    db = prepare(config)
    outcomes: list[Outcome] = []
    try:
        lock = take_loop(db, config, "run")
        metrics = tracking = None
        try:
            metrics = serve_metrics(config)
            runtime = start_runtime(config)
            open_loop(db, config)
            tracking = Tracking(db, config)

            def phase_started(loop: str, number: int, phase: str) -> None:
                tracking.poke()
                if on_phase is not None:
                    on_phase(loop, number, phase)

            try:
                while iterations is None or len(outcomes) < iterations:
                    if stop():
                        break
                    outcome = run_iteration(db, config, runtime, stop, on_phase=phase_started)
                    if outcome.status != "done":
                        logger.info("loop {}: {}", outcome.loop, outcome.status)
                        break
                    outcomes.append(outcome)
                    tracking.poke()
                    if on_iteration is not None:
                        on_iteration(outcome)
            except Interrupted as exc:
                logger.warning("{}; committed work is kept: `selfloop resume {}` continues", exc, config.loop.name)
            finally:
                runtime.close()
        finally:
            if tracking is not None:
                tracking.close()
            stop_metrics(metrics)
            lock.release()
    finally:
        db.dispose()
    return outcomes

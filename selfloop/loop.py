"""The iteration state machine, driven by database state.

`run_iteration` runs one iteration and returns: it continues the loop's unfinished iteration at the
first phase not marked done, or starts the next one. Every phase is idempotent, so a crash at any
point followed by another call yields the rows an uninterrupted run would have written.

The starting policy of an iteration is the loop's current checkpoint (the last promoted one, or a
fork's starting checkpoint), or the base model.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loguru import logger
from sqlalchemy.orm import Session

from selfloop.config import Config
from selfloop.db.engine import Database
from selfloop.db.models import Iteration, Loop, PhaseRun
from selfloop.db.queries import (
    adapter_of,
    add_event,
    delete_iteration_rows,
    has_results,
    last_iteration,
    lineage_offset,
    loop_by_name,
    phase_run,
    phase_summary,
    row,
)
from selfloop.db.training import clear_steps
from selfloop.errors import Interrupted, SelfloopError
from selfloop.phases import PHASES
from selfloop.phases.context import PhaseContext
from selfloop.progress import ITERATION
from selfloop.runtime import Runtime

# Fields that do not change what a loop computes: they may differ between runs of one loop.
NON_SEMANTIC = {
    "loop": {"max_iterations", "state_dir", "stall_timeout_s"},
    "engine": {"batch_size", "device", "gpu_memory_utilization", "tensor_parallel_size", "enable_sleep_mode",
               "max_model_len", "max_lora_rank", "enforce_eager"},
    "eval": {"reuse_from_store", "cache_dir"},  # the rows are the same either way
    "schedule": None, "database": None, "logging": None, "metrics": None, "warnings": None, "tracking": None,  # None: the whole section
}


def semantic_part(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The part of a config snapshot that decides what a loop computes (NON_SEMANTIC left out)."""
    semantic = {}
    for section, body in snapshot.items():
        skip = NON_SEMANTIC.get(section, set())
        if skip is None:
            continue
        semantic[section] = {k: v for k, v in body.items() if k not in skip} if isinstance(body, dict) else body
    return semantic


def fingerprint(config: Config) -> tuple[dict[str, Any], str]:
    """(snapshot stored with the loop, hash of its semantic part)."""
    snapshot = config.model_dump(mode="json")
    digest = hashlib.sha256(json.dumps(semantic_part(snapshot), sort_keys=True).encode()).hexdigest()
    return snapshot, digest


def changed_fields(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += changed_fields(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def open_loop(db: Database, config: Config) -> Loop:
    """The loop named in the config: created on first use; refused if its config changed since."""
    snapshot, digest = fingerprint(config)
    with db.session() as session:
        loop = loop_by_name(session, config.loop.name)
        if loop is None:
            loop = Loop(
                name=config.loop.name, base_model=config.model.base, config=snapshot, config_hash=digest,
                main_metric=config.eval.main_metric, seed=config.loop.seed, status="ready",
            )
            session.add(loop)
            session.flush()
            add_event(session, loop.id, None, "loop.created", f"loop {loop.name} created")
            return loop
        if loop.config != snapshot:
            changed = changed_fields(_with_defaults(loop.config), snapshot)
            semantic = [f for f in changed if _semantic(f)]
            if semantic and not has_results(session, loop) and (loop.parent_loop_id is None or loop.base_model == config.model.base):
                # Nothing finished and no checkpoint: what ran was a false start (an engine that could not start
                # here, say). The new config replaces the old, and the false start's rows go.
                delete_iteration_rows(session, loop, with_iterations=True)
                loop.config, loop.config_hash, loop.status = snapshot, digest, "ready"
                loop.base_model, loop.main_metric, loop.seed = config.model.base, config.eval.main_metric, config.loop.seed
                add_event(session, loop.id, None, "loop.config_replaced",
                          f"config of {loop.name} replaced before any iteration finished: {', '.join(semantic[:10])}")
                return loop
            if semantic:
                raise SelfloopError(
                    f"loop {loop.name!r} exists with a different config (changed: {', '.join(semantic[:6])}); "
                    f"fork it to run the new config: selfloop fork {loop.name} --at N --name NEW --config FILE"
                )
            # Only speed, schedule or limits changed (or this version added fields with their defaults):
            # the stored config says what runs from now on.
            loop.config, loop.config_hash = snapshot, digest
            if changed:
                add_event(session, loop.id, None, "loop.config_updated", f"config of {loop.name} updated: {', '.join(changed[:10])}")
        return loop


def _with_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored snapshot with the fields this version added filled with their defaults (as stored, if it no
    longer validates), so that an upgrade alone never counts as a changed config."""
    from selfloop.config import stored_config
    from selfloop.errors import ConfigError

    try:
        return stored_config(stored, "?").model_dump(mode="json")
    except ConfigError:  # a snapshot of an older shape is compared as it is
        return stored


def _semantic(path: str) -> bool:
    section, _, key = path.partition(".")
    skip = NON_SEMANTIC.get(section, set())
    return skip is not None and key.split(".")[0] not in skip


def _next_iteration(session: Session, loop: Loop, config: Config) -> Iteration | None:
    last = last_iteration(session, loop.id)
    if last is not None and last.status == "running":
        return last  # resume where the previous process stopped
    number = last.number + 1 if last else 1
    if config.loop.max_iterations is not None and number > config.loop.max_iterations:
        return None
    it = Iteration(loop_id=loop.id, number=number, status="running", base_checkpoint_id=loop.current_checkpoint_id)
    session.add(it)
    session.flush()
    return it


@dataclass
class Outcome:
    loop: str
    iteration: int
    status: str  # done | finished (no iteration left) | paused
    last: bool = False  # done, and it was the loop's last iteration (the loop is finished now)


def run_iteration(
    db: Database, config: Config, runtime: Runtime, stop_requested: Callable[[], bool] = lambda: False,
    on_phase: Callable[[str, int, str], None] | None = None,
) -> Outcome:
    """Run (or finish) one iteration of the config's loop and return."""
    with db.session() as session:
        loop = loop_by_name(session, config.loop.name)
        if loop is None:
            raise SelfloopError(f"no loop named {config.loop.name!r}")
        if loop.status == "paused":
            return Outcome(loop.name, -1, "paused")
        it = _next_iteration(session, loop, config)
        if it is None:
            loop.status = "finished"
            return Outcome(loop.name, config.loop.max_iterations or 0, "finished")
        if loop.status == "finished":  # max_iterations was raised since: the loop runs again
            loop.status = "ready"
        loop_id, iteration_id, number = loop.id, it.id, it.number
        offset = lineage_offset(session, loop.id)
        policy = adapter_of(session, it.base_checkpoint_id, config)
        ITERATION.start(_last_duration_s(session, loop_id))
    for phase in config.loop.phases:
        phase_run_id = _start_phase(db, iteration_id, phase)
        if phase_run_id is None:
            continue  # done earlier
        if on_phase is not None:
            on_phase(config.loop.name, number, phase)
        ctx = PhaseContext(db, config, runtime, loop_id, iteration_id, number, phase, phase_run_id, policy, stop_requested,
                           offset)
        with logger.contextualize(loop=config.loop.name, iteration=number, phase=phase):
            logger.info("{} iteration {}: {}{}", config.loop.name, number, phase, ITERATION.eta())
            started = time.monotonic()
            try:
                ctx.failpoint("start")
                PHASES[phase](ctx)
            except Interrupted:
                _end_phase(db, phase_run_id, "interrupted")
                raise
            except BaseException as exc:
                _end_phase(db, phase_run_id, "failed", _one_line(exc))
                raise
            with db.session() as session:
                run = session.get(PhaseRun, phase_run_id)
                if run is None or run.status != "done":
                    raise RuntimeError(f"phase {phase} returned without marking itself done")
                summary = phase_summary(session, iteration_id, phase)
            logger.info("{} iteration {}: {} done in {:.1f} s{}", config.loop.name, number, phase,
                        time.monotonic() - started, f" ({summary})" if summary else "")
    with db.session() as session:
        it = row(session, Iteration, iteration_id)
        it.status, it.finished_at = "done", datetime.now(UTC)
        loop = row(session, Loop, loop_id)
        last = config.loop.max_iterations is not None and number >= config.loop.max_iterations
        if last:
            loop.status = "finished"
        add_event(session, loop_id, iteration_id, "iteration.done", f"{loop.name} iteration {number} done")
    return Outcome(config.loop.name, number, "done", last)


def _last_duration_s(session: Session, loop_id: int) -> float | None:
    """How long the loop's last finished iteration took (the next one's ETA)."""
    last = last_iteration(session, loop_id, done=True)
    if last is None or last.finished_at is None or last.started_at is None:
        return None
    return (last.finished_at - last.started_at).total_seconds()


def _one_line(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(exc)).strip().splitlines()[0]
    return text if len(text) <= 500 else text[:497] + "..."


def _start_phase(db: Database, iteration_id: int, phase: str) -> int | None:
    """Mark the phase running (a new attempt if it ran before); None if it is already done."""
    with db.session() as session:
        run = phase_run(session, iteration_id, phase)
        if run is not None and run.status == "done":
            return None
        if run is None:
            run = PhaseRun(iteration_id=iteration_id, phase=phase, status="running", attempts=1)
            session.add(run)
        else:
            run.status, run.attempts, run.error = "running", run.attempts + 1, None
            run.started_at, run.finished_at = datetime.now(UTC), None
            if phase == "train":  # training starts over: in the same transaction, so every step row of a running
                clear_steps(session, iteration_id)  # train phase is its current attempt's (trackers stream them)
        row(session, Iteration, iteration_id).phase = phase
        session.flush()
        return run.id


def _end_phase(db: Database, phase_run_id: int, status: str, error: str | None = None) -> None:
    with db.session() as session:
        run = row(session, PhaseRun, phase_run_id)
        run.status, run.error, run.finished_at = status, error, datetime.now(UTC)
        if error:
            it = row(session, Iteration, run.iteration_id)
            add_event(session, it.loop_id, it.id, "phase.failed", f"{run.phase} failed: {error}", level="error")

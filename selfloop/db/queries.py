"""Query functions over the store; each takes a session first (callers own the transaction)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from selfloop.db.models import Judgment, Loop, Prompt, Sample


def iteration_summary(session: Session, loop: str | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    sql = "SELECT * FROM iteration_summary"
    params: dict[str, Any] = {}
    if loop is not None:
        sql += " WHERE loop = :loop"
        params["loop"] = loop
    result = session.execute(text(sql + " ORDER BY loop, iteration"), params)
    return list(result.keys()), [tuple(r) for r in result]


def lineage(session: Session) -> tuple[list[str], list[tuple[Any, ...]]]:
    result = session.execute(text("SELECT * FROM loop_lineage WHERE parent_loop IS NOT NULL ORDER BY loop"))
    return list(result.keys()), [tuple(r) for r in result]


def loop_by_name(session: Session, name: str) -> Loop | None:
    return session.scalars(select(Loop).where(Loop.name == name)).one_or_none()


def _insert(session: Session):  # noqa: ANN202
    """The dialect's INSERT construct (both SQLite and PostgreSQL have ON CONFLICT)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def insert_ignore(session: Session, model: type, rows: list[dict[str, Any]], keys: list[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO NOTHING: how phases stay idempotent."""
    if rows:
        stmt = _insert(session)(model).on_conflict_do_nothing(index_elements=keys)
        session.execute(stmt, rows)  # executemany: SQLAlchemy batches the VALUES itself


def set_metric(session: Session, iteration_id: int, name: str, value: float) -> None:
    """Insert or overwrite one per-iteration metric."""
    from selfloop.db.models import Metric

    stmt = _insert(session)(Metric).values(iteration_id=iteration_id, name=name, value=float(value))
    stmt = stmt.on_conflict_do_update(index_elements=["iteration_id", "name"], set_={"value": stmt.excluded.value})
    session.execute(stmt)


def metrics_of(session: Session, iteration_id: int, prefix: str = "") -> dict[str, float]:
    from selfloop.db.models import Metric

    rows = session.execute(
        select(Metric.name, Metric.value).where(Metric.iteration_id == iteration_id, Metric.name.startswith(prefix))
    )
    return {name: value for name, value in rows}


def add_event(session: Session, loop_id: int | None, iteration_id: int | None, kind: str, message: str,
              level: str = "info", data: dict[str, Any] | None = None) -> None:
    from loguru import logger

    from selfloop.db.models import Event

    session.add(Event(loop_id=loop_id, iteration_id=iteration_id, level=level, kind=kind, message=message, data=data))
    logger.log("WARNING" if level == "warning" else "ERROR" if level == "error" else "INFO", "{}: {}", kind, message)


def adapter_of(session: Session, checkpoint_id: int | None):  # noqa: ANN201
    """The checkpoint as an engine Adapter (None: the base model); refuses a deleted checkpoint."""
    from pathlib import Path

    from selfloop.db.models import Checkpoint
    from selfloop.engines.base import Adapter
    from selfloop.errors import CheckpointError

    if checkpoint_id is None:
        return None
    ckpt = session.get(Checkpoint, checkpoint_id)
    if ckpt is None or ckpt.status != "ok":
        raise CheckpointError(f"checkpoint {checkpoint_id} is {'missing' if ckpt is None else ckpt.status}; it cannot be used as a policy")
    return Adapter(ckpt.id, Path(ckpt.path), ckpt.sha256)


def loop_status(session: Session) -> tuple[list[str], list[tuple[Any, ...]]]:
    """One row per loop: state, current iteration and phase, the running phase's progress, policy."""
    from selfloop.db.models import Checkpoint, Iteration, PhaseRun

    columns = ["loop", "status", "iterations_done", "iteration", "phase", "progress", "policy", "note"]
    rows = []
    for loop in session.scalars(select(Loop).order_by(Loop.name)):
        done = session.scalar(select(func.count()).select_from(Iteration).where(
            Iteration.loop_id == loop.id, Iteration.status == "done")) or 0
        last = session.scalars(select(Iteration).where(Iteration.loop_id == loop.id)
                               .order_by(Iteration.number.desc()).limit(1)).one_or_none()
        number = phase = progress = None
        if last is not None and last.status == "running":
            number, phase = last.number, last.phase
            run = session.scalars(select(PhaseRun).where(PhaseRun.iteration_id == last.id, PhaseRun.phase == last.phase)).one_or_none()
            if run is not None:
                progress = f"{run.status} {run.progress_done}/{run.progress_total}" if run.progress_total else run.status
        policy = session.scalar(select(Checkpoint.path).where(Checkpoint.id == loop.current_checkpoint_id)) or "base model"
        rows.append((loop.name, loop.status, done, number, phase, progress, policy, loop.status_reason))
    return columns, rows


def live_daemons(session: Session, within_s: int = 120) -> list[tuple[Any, ...]]:
    """(host, pid, started_at, status) of daemons that have not stopped and beat within `within_s`."""
    from datetime import UTC, datetime, timedelta

    from selfloop.db.models import Daemon

    rows = session.execute(select(Daemon.host, Daemon.pid, Daemon.started_at, Daemon.heartbeat_at, Daemon.status)
                           .where(Daemon.stopped_at.is_(None)).order_by(Daemon.id.desc())).all()
    now = datetime.now(UTC)
    live = []
    for host, pid, started, beat, status in rows:
        beat = beat if beat.tzinfo else beat.replace(tzinfo=UTC)
        if now - beat <= timedelta(seconds=within_s):
            live.append((host, pid, started, status))
    return live


def voted_samples(session: Session, iteration_id: int, *columns: Any) -> list[Any]:
    """`columns` of each sample of the iteration joined with its vote judgment, in prompt then sample order
    (the order TTRL's first-N_train cut and ReST-EM's per-prompt cap depend on)."""
    return session.execute(
        select(*columns)
        .join(Prompt, Prompt.id == Sample.prompt_id)
        .join(Judgment, (Judgment.sample_id == Sample.id) & (Judgment.kind == "vote"))
        .where(Sample.iteration_id == iteration_id)
        .order_by(Prompt.source, Prompt.item_index, Sample.sample_index)
    ).all()

"""Query functions over the store; each takes a session first (callers own the transaction)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from selfloop.db.models import Loop


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

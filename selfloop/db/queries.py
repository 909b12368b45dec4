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

"""An iteration's own rows as its phases read them (`selfloop.phases`): its prompts and which have samples, the
self-instruct prompts the loop made so far, its examples, and the progress and done mark of a phase run."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.orm import Session

from selfloop.db.models import Example, Iteration, PhaseRun, Prompt, Sample


def prompts(session: Session, iteration_id: int) -> Sequence[Row]:
    """(id, source, item_index, text, messages) of the iteration's prompts: task pool then self-instruct, by index."""
    return session.execute(select(Prompt.id, Prompt.source, Prompt.item_index, Prompt.text, Prompt.messages)
                           .where(Prompt.iteration_id == iteration_id).order_by(Prompt.source, Prompt.item_index)).all()


def sampled(session: Session, iteration_id: int) -> set[int]:
    """The ids of the iteration's prompts that have samples (a prompt's samples are committed together)."""
    return set(session.scalars(select(Sample.prompt_id).where(Sample.iteration_id == iteration_id)))


def self_instructed(session: Session, loop_id: int) -> Sequence[Row]:
    """(iteration number, item_index, text) of every self-instruct prompt the loop has made, in order."""
    return session.execute(
        select(Iteration.number, Prompt.item_index, Prompt.text).join(Iteration, Iteration.id == Prompt.iteration_id)
        .where(Iteration.loop_id == loop_id, Prompt.source == "self_instruct")
        .order_by(Iteration.number, Prompt.item_index)).all()


def prompt_count(session: Session, iteration_id: int, source: str) -> int:
    return session.scalar(select(func.count()).where(Prompt.iteration_id == iteration_id, Prompt.source == source)) or 0


def example_count(session: Session, iteration_id: int) -> int:
    return session.scalar(select(func.count()).select_from(Example).where(Example.iteration_id == iteration_id)) or 0


def example_ids(session: Session, iteration_id: int, indexes: list[int]) -> dict[int, int]:
    """Example item_index -> id, for these indexes."""
    return {i: e for i, e in session.execute(select(Example.item_index, Example.id).where(
        Example.iteration_id == iteration_id, Example.item_index.in_(indexes)))}


def mark_phase_done(session: Session, phase_run_id: int) -> None:
    session.execute(update(PhaseRun).where(PhaseRun.id == phase_run_id).values(status="done", finished_at=datetime.now(UTC)))


def set_phase_progress(session: Session, phase_run_id: int, **values: Any) -> None:
    session.execute(update(PhaseRun).where(PhaseRun.id == phase_run_id).values(**values))


def numbered(session: Session, loop_id: int, number: int) -> Iteration | None:
    """The loop's iteration `number`, if it has one."""
    return session.scalars(select(Iteration).where(Iteration.loop_id == loop_id, Iteration.number == number)).one_or_none()

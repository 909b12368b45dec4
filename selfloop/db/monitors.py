"""What the drift monitors (`selfloop.evals.drift`) read: an iteration's samples (texts, lengths, log-probs,
per-token self-certainty), a stored figure of an iteration, and the loop's first iteration to compare with."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from selfloop.db.models import Eval, Iteration, Metric, Sample


def metric_value(session: Session, iteration_id: int, name: str) -> float | None:
    return session.scalar(select(Metric.value).where(Metric.iteration_id == iteration_id, Metric.name == name))


def eval_value(session: Session, iteration_id: int, role: str, suite: str, metric: str) -> float | None:
    return session.scalar(select(Eval.value).where(
        Eval.iteration_id == iteration_id, Eval.role == role, Eval.suite == suite, Eval.metric == metric))


def sample_texts(session: Session, iteration_id: int) -> Sequence[Row]:
    """(prompt_id, text) of each of the iteration's samples."""
    return session.execute(select(Sample.prompt_id, Sample.text).where(Sample.iteration_id == iteration_id)).all()


def self_certainties(session: Session, iteration_id: int) -> list[list[float]]:
    """The per-token self-certainties of each sample that recorded them."""
    return [list(v) for v in session.scalars(select(Sample.token_self_certainties).where(
        Sample.iteration_id == iteration_id, Sample.token_self_certainties.is_not(None))) if v]


def length_and_logprob(session: Session, iteration_id: int) -> tuple[float | None, float | None]:
    """The iteration's mean sample length (tokens) and mean per-token log-prob."""
    length, logprob = session.execute(select(func.avg(Sample.num_tokens), func.avg(Sample.mean_logprob))
                                      .where(Sample.iteration_id == iteration_id)).one()
    return length, logprob


def first_iteration(session: Session, loop_id: int) -> int | None:
    """The id of the loop's first iteration."""
    return session.scalar(select(Iteration.id).where(Iteration.loop_id == loop_id).order_by(Iteration.number).limit(1))

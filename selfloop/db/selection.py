"""What the built-in algorithms' `select` read beyond the shared helpers of `db.queries` (voted_samples,
judged_means, kept_samples): each a shaped read of one iteration's prompts, samples and judgments, in the order the
loop drew them, so a selection is the same on every re-run."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from selfloop.db.iteration import numbered
from selfloop.db.models import Example, Iteration, Judgment, Prompt, Sample, Vote

DRAWN = (Prompt.source, Prompt.item_index)  # the order a loop draws its prompts in


def iteration_number(session: Session, iteration_id: int) -> int | None:
    return session.scalar(select(Iteration.number).where(Iteration.id == iteration_id))


def previous_iteration(session: Session, iteration_id: int) -> int | None:
    """The id of the loop's iteration before this one."""
    it = session.get(Iteration, iteration_id)
    previous = numbered(session, it.loop_id, it.number - 1) if it is not None else None
    return previous.id if previous is not None else None


def prompt_places(session: Session, iteration_id: int) -> dict[int, tuple[str, int]]:
    """Prompt id -> (source, item_index) of the iteration's prompts."""
    return {r.id: (r.source, r.item_index) for r in session.execute(
        select(Prompt.id, Prompt.source, Prompt.item_index).where(Prompt.iteration_id == iteration_id))}


def reference_pairs(session: Session, iteration_id: int) -> Sequence[Row]:
    """(prompt id, reference, first sample id) of each prompt with a reference completion (SPIN's real data)."""
    return session.execute(select(Prompt.id, Prompt.reference, Sample.id)
                           .join(Sample, (Sample.prompt_id == Prompt.id) & (Sample.sample_index == 0))
                           .where(Prompt.iteration_id == iteration_id, Prompt.reference.is_not(None))
                           .order_by(*DRAWN)).all()


def examples(session: Session, iteration_id: int) -> Sequence[Example]:
    """The iteration's training examples, by index."""
    return session.scalars(select(Example).where(Example.iteration_id == iteration_id).order_by(Example.item_index)).all()


def sampled_logps(session: Session, iteration_id: int) -> Sequence[Row]:
    """(prompt id, sample id, sum of the sample's log-probs as sampled) of every sample (RLSC's p_old)."""
    return session.execute(select(Sample.prompt_id, Sample.id, Sample.sum_logprob).join(Prompt, Prompt.id == Sample.prompt_id)
                           .where(Sample.iteration_id == iteration_id).order_by(*DRAWN, Sample.sample_index)).all()


def judged_samples(session: Session, iteration_id: int) -> Sequence[Row]:
    """(prompt id, sample id, text, finish_reason, score, parse_ok) of every sample with each of its LLM-judge
    verdicts (none: one row with a null score), the score training reads."""
    return session.execute(
        select(Sample.prompt_id, Sample.id, Sample.text, Sample.finish_reason, Judgment.trained_score, Judgment.trained_ok)
        .join(Prompt, Prompt.id == Sample.prompt_id)
        .outerjoin(Judgment, (Judgment.sample_id == Sample.id) & (Judgment.kind == "llm_judge"))
        .where(Sample.iteration_id == iteration_id)
        .order_by(*DRAWN, Sample.sample_index, Judgment.judge_index)).all()


def judged_verdicts(session: Session, iteration_id: int) -> Sequence[Row]:
    """(prompt id, sample id, prompt text, score, raw verdict) of every readable LLM-judge verdict with a score."""
    return session.execute(
        select(Sample.prompt_id, Sample.id, Prompt.text, Judgment.trained_score, Judgment.raw)
        .join(Prompt, Prompt.id == Sample.prompt_id)
        .join(Judgment, (Judgment.sample_id == Sample.id) & (Judgment.kind == "llm_judge") & Judgment.trained_ok)
        .where(Sample.iteration_id == iteration_id, Judgment.trained_score.is_not(None))
        .order_by(*DRAWN, Sample.sample_index, Judgment.judge_index)).all()


def votes(session: Session, prompt_ids: list[int]) -> dict[int, Vote]:
    return {v.prompt_id: v for v in session.scalars(select(Vote).where(Vote.prompt_id.in_(prompt_ids)))}

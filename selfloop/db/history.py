"""Reading a loop's history for what takes it elsewhere: the rows of `selfloop export` and the figures the experiment
trackers are sent. Query functions that take a session; export.py and tracking.py shape what these return."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from selfloop.db.models import (
    Checkpoint,
    Eval,
    EvalItem,
    Event,
    Example,
    ExampleCandidate,
    Iteration,
    Judgment,
    Metric,
    PhaseRun,
    Prompt,
    Sample,
    TrackerRun,
    TrainStep,
)


# -- iterations ------------------------------------------------------------------------------------
def iteration_numbers(session: Session, loop_id: int, number: int | None = None) -> dict[int, int]:
    """Iteration id -> number, of the loop's iterations (or only iteration `number`)."""
    query = select(Iteration.id, Iteration.number).where(Iteration.loop_id == loop_id)
    if number is not None:
        query = query.where(Iteration.number == number)
    return dict(session.execute(query).all())


def iterations_of(session: Session, loop_id: int) -> list[Iteration]:
    return list(session.scalars(select(Iteration).where(Iteration.loop_id == loop_id).order_by(Iteration.number)))


def output_checkpoint(session: Session, loop_id: int, number: int) -> int | None:
    return session.scalar(select(Iteration.output_checkpoint_id).where(Iteration.loop_id == loop_id, Iteration.number == number))


def checkpoint_path(session: Session, checkpoint_id: int | None) -> str | None:
    return session.scalar(select(Checkpoint.path).where(Checkpoint.id == checkpoint_id)) if checkpoint_id else None


# -- what trackers are sent ------------------------------------------------------------------------
def train_phases(session: Session, iteration_ids: list[int]) -> dict[int, PhaseRun]:
    """The train phase's run of each of the iterations that has one, by iteration id."""
    return {run.iteration_id: run for run in session.scalars(select(PhaseRun).where(
        PhaseRun.iteration_id.in_(iteration_ids), PhaseRun.phase == "train"))}


def train_steps(session: Session, iteration_id: int) -> list[TrainStep]:
    return list(session.scalars(select(TrainStep).where(TrainStep.iteration_id == iteration_id).order_by(TrainStep.step)))


def iteration_figures(session: Session, iteration: Iteration) -> dict[str, float]:
    """An iteration's metrics, its held-out results (eval.ROLE.SUITE.METRIC, with .ci_low and .ci_high) and whether
    it was promoted."""
    values: dict[str, float] = dict(session.execute(select(Metric.name, Metric.value).where(Metric.iteration_id == iteration.id)).all())
    for role, suite, metric, value, low, high in session.execute(select(
            Eval.role, Eval.suite, Eval.metric, Eval.value, Eval.ci_low, Eval.ci_high).where(Eval.iteration_id == iteration.id)):
        values[f"eval.{role}.{suite}.{metric}"] = value
        if low is not None and high is not None:
            values[f"eval.{role}.{suite}.{metric}.ci_low"], values[f"eval.{role}.{suite}.{metric}.ci_high"] = low, high
    if iteration.promoted is not None:
        values["promoted"] = float(iteration.promoted)
    return values


def events_after(session: Session, loop_id: int, after_id: int) -> list[Event]:
    return list(session.scalars(select(Event).where(Event.loop_id == loop_id, Event.id > after_id).order_by(Event.id)))


def tracker_mark(session: Session, loop_id: int, backend: str) -> TrackerRun | None:
    """How far the loop's history has been sent to `backend` (mlflow, wandb)."""
    return session.scalars(select(TrackerRun).where(TrackerRun.loop_id == loop_id, TrackerRun.backend == backend)).one_or_none()


# -- what export writes ----------------------------------------------------------------------------
def mean_judge_scores(session: Session, sample_ids: set[int]) -> dict[int, float]:
    if not sample_ids:
        return {}
    rows = session.execute(select(Judgment.sample_id, func.avg(Judgment.trained_score)).where(
        Judgment.sample_id.in_(sample_ids), Judgment.kind == "llm_judge", Judgment.trained_ok).group_by(Judgment.sample_id))
    return {sid: float(score) for sid, score in rows}


def eval_items_of(session: Session, iteration_ids: list[int]) -> list[EvalItem]:
    return list(session.scalars(select(EvalItem).where(EvalItem.iteration_id.in_(iteration_ids))
                                .order_by(EvalItem.iteration_id, EvalItem.role, EvalItem.suite, EvalItem.item_index)))


def samples_of(session: Session, iteration_ids: list[int]) -> list[Any]:
    """(Sample, prompt text, known answer, the prompt's conversation or None) in iteration, prompt, sample order."""
    return list(session.execute(select(Sample, Prompt.text, Prompt.answer, Prompt.messages).join(Prompt, Prompt.id == Sample.prompt_id)
                                .where(Sample.iteration_id.in_(iteration_ids))
                                .order_by(Sample.iteration_id, Prompt.source, Prompt.item_index, Sample.sample_index)))


def votes_of(session: Session, sample_ids: list[int]) -> dict[int, tuple[str | None, float | None]]:
    """Sample id -> (its vote answer, its vote reward)."""
    return {sid: (answer, score) for sid, answer, score in session.execute(
        select(Judgment.sample_id, Judgment.answer, Judgment.trained_score)
        .where(Judgment.sample_id.in_(sample_ids), Judgment.kind == "vote"))}


def examples_of(session: Session, iteration_ids: list[int]) -> list[Any]:
    """(Example, prompt text, chosen text, rejected text, whether it is a ranking, the prompt's conversation or None)
    in iteration, item order."""
    chosen, rejected = aliased(Sample), aliased(Sample)
    ranked = select(ExampleCandidate.id).where(ExampleCandidate.example_id == Example.id).exists()
    return list(session.execute(select(Example, Prompt.text, chosen.text, rejected.text, ranked, Prompt.messages)
                                .join(Prompt, Prompt.id == Example.prompt_id)
                                .outerjoin(chosen, chosen.id == Example.sample_id)
                                .outerjoin(rejected, rejected.id == Example.rejected_sample_id)
                                .where(Example.iteration_id.in_(iteration_ids)).order_by(Example.iteration_id, Example.item_index)))


def rankings_of(session: Session, iteration_ids: list[int]) -> list[Any]:
    """(example id, iteration id, algorithm, prompt text, candidate text, score), candidates best first."""
    return list(session.execute(
        select(Example.id, Example.iteration_id, Example.algorithm, Prompt.text, Sample.text, ExampleCandidate.score)
        .join(ExampleCandidate, ExampleCandidate.example_id == Example.id)
        .join(Prompt, Prompt.id == Example.prompt_id).join(Sample, Sample.id == ExampleCandidate.sample_id)
        .where(Example.iteration_id.in_(iteration_ids)).order_by(Example.iteration_id, Example.item_index, ExampleCandidate.rank)
    ).all())


def export_counts(session: Session, iteration_ids: list[int]) -> dict[str, int]:
    """How many rows each kind of export would write."""
    examples = select(func.count()).select_from(Example).where(Example.iteration_id.in_(iteration_ids))
    ranked = select(ExampleCandidate.id).where(ExampleCandidate.example_id == Example.id).exists()
    return {"pairs": session.scalar(examples.where(Example.rejected_sample_id.is_not(None))) or 0,
            "examples": session.scalar(examples.where(Example.rejected_sample_id.is_(None), ~ranked)) or 0,
            "ranked": session.scalar(examples.where(ranked)) or 0,
            "samples": session.scalar(select(func.count()).select_from(Sample).where(Sample.iteration_id.in_(iteration_ids))) or 0,
            "evals": session.scalar(select(func.count()).select_from(EvalItem).where(EvalItem.iteration_id.in_(iteration_ids))) or 0}

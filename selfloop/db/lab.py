"""What a lab reads from a finished loop: its held-out rows at the start and at the end, its curve, its cost and its
signal's quality (one results line per arm x seed is made from these)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from selfloop.db.models import Eval, EvalItem, Event, Iteration, Loop, Metric, PhaseRun
from selfloop.db.queries import monitor_history
from selfloop.errors import SelfloopError


def loop_outcome(session: Session, name: str) -> dict[str, Any] | None:
    """Per suite: 'start' (iteration 1's baseline) and 'final' (the last promoted candidate, else the start) as
    correct flags in item order, and 'curve' (each iteration's policy after its gate: the candidate if promoted,
    else the baseline, greedy accuracy; None where a suite answered at the loop's ends only was not asked); the
    loop's iterations, promotions, seconds per phase, and the mean of its judge.label_accuracy and
    judge.rewarded_right. A running loop leaves out a suite its final policy has not answered yet; a finished one
    without them is refused. None: no such loop or no finished iteration."""
    loop = session.scalars(select(Loop).where(Loop.name == name)).one_or_none()
    if loop is None:
        return None
    iterations = session.scalars(select(Iteration).where(Iteration.loop_id == loop.id, Iteration.status == "done")
                                 .order_by(Iteration.number)).all()
    if not iterations:
        return None
    promoted = [it for it in iterations if it.promoted]

    def rows(iteration_id: int, role: str) -> dict[str, list[bool]]:
        out: dict[str, list[bool]] = defaultdict(list)
        for suite, correct in session.execute(select(EvalItem.suite, EvalItem.correct).where(
                EvalItem.iteration_id == iteration_id, EvalItem.role == role).order_by(EvalItem.suite, EvalItem.item_index)):
            out[suite].append(bool(correct))
        return out

    start = rows(iterations[0].id, "baseline")
    final = rows(promoted[-1].id, "candidate") if promoted else dict(start)
    last = iterations[-1]
    if promoted and last.number > promoted[-1].number and last.base_checkpoint_id == promoted[-1].output_checkpoint_id:
        # A suite answered at the loop's ends only (eval.suites[].when 'ends') has the final policy's answers where it
        # was the last iteration's baseline: when the last gate rejected.
        final = {**rows(last.id, "baseline"), **final}
    missing = sorted(set(start) - set(final))
    if missing and loop.status == "finished":
        raise SelfloopError(f"loop {name!r}: its final policy has no answers to suite(s) {', '.join(missing)} (answered "
                            "at the loop's ends only, and the loop stopped before its last iteration)")
    curve: dict[str, list[float | None]] = defaultdict(list)
    for it in iterations:
        role = "candidate" if it.promoted else "baseline"
        values = dict(session.execute(select(Eval.suite, Eval.value).where(
            Eval.iteration_id == it.id, Eval.role == role, Eval.metric == "greedy_accuracy")).all())
        for suite in start:
            curve[suite].append(values.get(suite))
    seconds: dict[str, float] = defaultdict(float)  # the last attempt of each phase (a crashed attempt is not counted)
    for phase, began, ended in session.execute(
            select(PhaseRun.phase, PhaseRun.started_at, PhaseRun.finished_at).join(Iteration, Iteration.id == PhaseRun.iteration_id)
            .where(Iteration.loop_id == loop.id, PhaseRun.status == "done")):
        if began is not None and ended is not None:
            seconds[phase] += (ended - began).total_seconds()
    signal = {}
    for metric in ("judge.label_accuracy", "judge.rewarded_right"):
        value = session.scalar(select(func.avg(Metric.value)).join(Iteration, Iteration.id == Metric.iteration_id)
                               .where(Iteration.loop_id == loop.id, Metric.name == metric))
        if value is not None:
            signal[metric.removeprefix("judge.")] = float(value)
    monitors = [{"iteration": number, **values} for number, values in monitor_history(session, loop.id, iterations[-1].number)]
    return {"created_at": loop.created_at.isoformat() if loop.created_at else None, "iterations": len(iterations),
            "promoted": len(promoted), "status": loop.status, "monitors": monitors,
            "suites": {s: {"start": start[s], "final": final[s], "curve": curve[s]} for s in start if s in final},
            "phase_seconds": {k: round(float(v or 0.0), 1) for k, v in seconds.items()}, "signal": signal}


def piece_states(session: Session, lab: str) -> dict[str, tuple[str, int]]:
    """Loop name -> (status, iterations done) of every loop of the lab (named LAB.ARM.SEED)."""
    return {name: (status, done) for name, status, done in session.execute(
        select(Loop.name, Loop.status, func.count(Iteration.id))
        .outerjoin(Iteration, (Iteration.loop_id == Loop.id) & (Iteration.status == "done"))
        .where(Loop.name.like(f"{lab}.%")).group_by(Loop.name, Loop.status))}


def has_piece_event(session: Session, loop_id: int) -> bool:
    """Whether the loop already says which lab piece it is (its 'lab.piece' event)."""
    return session.scalar(select(Event.id).where(Event.loop_id == loop_id, Event.kind == "lab.piece").limit(1)) is not None


def gated_iterations(session: Session, loop_prefix: str) -> Sequence[Row]:
    """(iteration id, number, promoted, loop name) of every decided iteration that trained a candidate, in the loops
    whose names start with `loop_prefix`, by loop and number."""
    return session.execute(
        select(Iteration.id, Iteration.number, Iteration.promoted, Loop.name).join(Loop, Loop.id == Iteration.loop_id)
        .where(Iteration.output_checkpoint_id.is_not(None), Iteration.promoted.is_not(None),
               Loop.name.startswith(loop_prefix, autoescape=True))
        .order_by(Loop.name, Iteration.number)).all()


def item_predictions(session: Session, iteration_id: int) -> Sequence[Row]:
    """(role, suite, item_index, greedy answer, majority answer) of every held-out item answered in the iteration
    (the majority only on suites with majority_k >= 2): what the label-free gate reads."""
    return session.execute(select(EvalItem.role, EvalItem.suite, EvalItem.item_index, EvalItem.predicted,
                                  EvalItem.majority_answer).where(EvalItem.iteration_id == iteration_id)).all()


def item_verdicts(session: Session, iteration_id: int) -> Sequence[Row]:
    """(role, suite, item_index, correct) of every held-out item answered in the iteration."""
    return session.execute(select(EvalItem.role, EvalItem.suite, EvalItem.item_index, EvalItem.correct)
                           .where(EvalItem.iteration_id == iteration_id)).all()

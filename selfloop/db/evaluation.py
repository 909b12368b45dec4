"""The held-out evaluation's reads (`selfloop.phases.evaluate`): a suite's answered items per policy, earlier
evaluations of the same policy to reuse, the prompts a loop trained on (which no suite may hold), and the
rollouts the drift from the starting policy is measured on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, select, true
from sqlalchemy.orm import Session

from selfloop.db.models import Eval, EvalItem, Iteration, Loop, Prompt, Sample


def trained_prompts(session: Session, loop_id: int) -> set[str]:
    """Every prompt text the loop has drawn for training."""
    return set(session.scalars(
        select(Prompt.text).join(Iteration, Iteration.id == Prompt.iteration_id).where(Iteration.loop_id == loop_id)))


def _of(iteration_id: int, role: str, suite: str) -> Any:
    return (EvalItem.iteration_id == iteration_id) & (EvalItem.role == role) & (EvalItem.suite == suite)


def suite_items(session: Session, iteration_id: int, role: str, suite: str) -> Sequence[EvalItem]:
    """One policy's answered items of one suite in an iteration, by index."""
    return session.scalars(select(EvalItem).where(_of(iteration_id, role, suite)).order_by(EvalItem.item_index)).all()


def answered(session: Session, iteration_id: int, role: str, suite: str) -> set[int]:
    """The indexes of the suite's items the policy has answered (stored) in the iteration."""
    return set(session.scalars(select(EvalItem.item_index).where(_of(iteration_id, role, suite))))


def graded(session: Session, iteration_id: int, role: str, suite: str) -> Sequence[Row]:
    """What a suite's figures are computed from: each answered item's verdicts, length, answers and parts."""
    return session.execute(select(EvalItem.correct, EvalItem.majority_correct, EvalItem.num_tokens, EvalItem.response,
                                  EvalItem.answer, EvalItem.predicted, EvalItem.majority_answer, EvalItem.parts)
                           .where(_of(iteration_id, role, suite))).all()


def answers(session: Session, iteration_id: int, role: str, suite: str) -> Sequence[Row]:
    """(item_index, prompt, response, correct) of each answered item, by index: an algorithm's own held-out figures."""
    return session.execute(select(EvalItem.item_index, EvalItem.prompt, EvalItem.response, EvalItem.correct)
                           .where(_of(iteration_id, role, suite)).order_by(EvalItem.item_index)).all()


def earlier_evaluations(session: Session, iteration_id: int, loop_id: int, suite: str, checkpoint_id: int | None,
                        loops: list[int] | None) -> Sequence[Row]:
    """(iteration_id, role, loop_id) of the other iterations that evaluated this policy on the suite, in `loops`
    (None: anywhere in the store): this loop's first, then by loop, newest first."""
    same_policy = Eval.checkpoint_id.is_(None) if checkpoint_id is None else Eval.checkpoint_id == checkpoint_id
    return session.execute(
        select(Eval.iteration_id, Eval.role, Iteration.loop_id)
        .join(Iteration, Iteration.id == Eval.iteration_id)
        .where(Iteration.id != iteration_id, Eval.suite == suite, same_policy,
               true() if loops is None else Iteration.loop_id.in_(loops))
        .order_by(Iteration.loop_id != loop_id, Iteration.loop_id, Eval.iteration_id.desc())).all()


def loop_configs(session: Session, loop_ids: set[int]) -> dict[int, dict[str, Any]]:
    """Loop id -> its stored config snapshot."""
    return {i: c for i, c in session.execute(select(Loop.id, Loop.config).where(Loop.id.in_(loop_ids)))}


def first_rollouts(session: Session, iteration_id: int, n: int) -> Sequence[Row]:
    """(prompt text, messages, token ids) of the iteration's first `n` rollouts, in the order they were drawn."""
    return session.execute(select(Prompt.text, Prompt.messages, Sample.token_ids)
                           .join(Prompt, Prompt.id == Sample.prompt_id).where(Sample.iteration_id == iteration_id)
                           .order_by(Prompt.source, Prompt.item_index, Sample.sample_index).limit(n)).all()


def predictions(session: Session, iteration_id: int, role: str, suite: str) -> Sequence[Row]:
    """(item_index, greedy answer, majority answer) of each answered item: the label-free self-consistency."""
    return session.execute(select(EvalItem.item_index, EvalItem.predicted, EvalItem.majority_answer)
                           .where(_of(iteration_id, role, suite))).all()


def verdicts(session: Session, iteration_id: int, role: str, suite: str, majority: bool = False) -> dict[int, bool]:
    """Item index -> whether the policy's greedy answer (or, with `majority`, its k samples' majority) was right."""
    column = EvalItem.majority_correct if majority else EvalItem.correct
    return {i: bool(ok) for i, ok in session.execute(select(EvalItem.item_index, column).where(_of(iteration_id, role, suite)))}


def figure(session: Session, iteration_id: int, suite: str, metric: str) -> dict[str, float]:
    """Role (candidate, baseline) -> the iteration's value of SUITE/METRIC."""
    return {role: value for role, value in session.execute(select(Eval.role, Eval.value).where(
        Eval.iteration_id == iteration_id, Eval.suite == suite, Eval.metric == metric))}


def decisions(session: Session, loop_id: int) -> list[bool]:
    """The loop's promotion decisions on trained candidates, newest first."""
    return [bool(p) for p in session.scalars(select(Iteration.promoted).where(
        Iteration.loop_id == loop_id, Iteration.promoted.is_not(None), Iteration.output_checkpoint_id.is_not(None)
    ).order_by(Iteration.number.desc()))]

"""The train phase's statements: the examples it trains on (with ranked candidates, sample tokens and prompt texts),
the reference log-probs it keeps on them, its step rows, and the checkpoint row that closes it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from selfloop.db.models import Checkpoint, Example, ExampleCandidate, Iteration, Prompt, Sample, TrainStep


@dataclass
class TrainingRows:
    examples: list[Example]  # in item order
    candidates: dict[int, list[Any]] = field(default_factory=dict)  # example id -> (sample_id, score) rows, best first
    samples: dict[int, Any] = field(default_factory=dict)  # sample id -> (id, token_ids, policy logprobs, policy id, text)
    prompts: dict[int, str] = field(default_factory=dict)  # prompt id -> text
    conversations: dict[int, list[dict[str, str]]] = field(default_factory=dict)  # prompt id -> its turns, if a chat


def training_rows(session: Session, iteration_id: int) -> TrainingRows:
    examples = list(session.scalars(select(Example).where(Example.iteration_id == iteration_id).order_by(Example.item_index)))
    candidates: dict[int, list[Any]] = defaultdict(list)
    for row in session.execute(select(ExampleCandidate.example_id, ExampleCandidate.sample_id, ExampleCandidate.score)
                               .join(Example, Example.id == ExampleCandidate.example_id)
                               .where(Example.iteration_id == iteration_id)
                               .order_by(ExampleCandidate.example_id, ExampleCandidate.rank)):
        candidates[row.example_id].append(row)
    sample_ids = ({e.sample_id for e in examples} | {e.rejected_sample_id for e in examples}
                  | {c.sample_id for rows in candidates.values() for c in rows}) - {None}
    samples = {row.id: row for row in session.execute(
        select(Sample.id, Sample.token_ids, Sample.policy_token_logprobs, Sample.policy_checkpoint_id, Sample.text)
        .where(Sample.id.in_(sample_ids)))}
    asked = session.execute(select(Prompt.id, Prompt.text, Prompt.messages)
                            .where(Prompt.id.in_({e.prompt_id for e in examples}))).all()
    prompts = {row.id: row.text for row in asked}
    conversations = {row.id: row.messages for row in asked if row.messages}
    return TrainingRows(examples, dict(candidates), samples, prompts, conversations)


def keep_reference(session: Session, items: Iterable[Any]) -> None:
    """Each training item's reference log-probs on its example row (a re-run reuses them)."""
    for it in items:
        session.execute(update(Example).where(Example.id == it.example_id).values(
            ref_logp=it.ref_logp, ref_rejected_logp=it.ref_rejected_logp, ref_token_logps=it.ref_token_logps))


def clear_steps(session: Session, iteration_id: int) -> None:
    """A re-run of training starts over: the partial run's step rows go."""
    session.execute(delete(TrainStep).where(TrainStep.iteration_id == iteration_id))


def add_step(session: Session, iteration_id: int, record: Any) -> None:
    session.add(TrainStep(iteration_id=iteration_id, step=record.step, loss=record.loss, learning_rate=record.learning_rate,
                          grad_norm=record.grad_norm, tokens_per_s=record.tokens_per_s, metrics=record.metrics))


def record_checkpoint(session: Session, iteration_id: int, *, path: str, sha256: str, base_model: str,
                      parent_checkpoint_id: int | None, size_bytes: int) -> int:
    """The new checkpoint's row, made the iteration's output; its id."""
    ckpt = Checkpoint(path=path, sha256=sha256, kind="lora", base_model=base_model,
                      parent_checkpoint_id=parent_checkpoint_id, size_bytes=size_bytes)
    session.add(ckpt)
    session.flush()
    session.execute(update(Iteration).where(Iteration.id == iteration_id).values(output_checkpoint_id=ckpt.id))
    return ckpt.id

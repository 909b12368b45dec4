"""The curate phase's queries: the pool of prompts it scores (what the filters see: Candidate), its rows, and what
they decided."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import String as String_
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from selfloop.db.models import Curation, Iteration, Judgment, Prompt, Sample, Vote

if TYPE_CHECKING:
    from selfloop.config.sections import MineHardConfig


@dataclass(frozen=True)
class PooledSample:
    id: int
    text: str
    token_ids: list[int]
    correct: bool | None  # as the judge phase graded it (None: no known answer or no answer)


@dataclass(frozen=True)
class Candidate:
    prompt_id: int
    text: str
    samples: list[PooledSample]
    vote_share: float | None  # the majority answer's share (None: no vote)
    judge_mean: float | None  # the mean valid LLM-judge score of its samples (None: not judged)

    @property
    def correct_share(self) -> float | None:
        checked = [s.correct for s in self.samples if s.correct is not None]
        return sum(checked) / len(checked) if checked else None


def curation_pool(session: Session, iteration_id: int) -> list[Candidate]:
    """The iteration's prompts that have samples, in prompt order, each with its samples (sample order), its vote
    share, the mean of its samples' valid LLM-judge scores and the share of its checked samples that are right."""
    prompts = session.execute(
        select(Prompt.id, Prompt.text, Vote.share)
        .outerjoin(Vote, Vote.prompt_id == Prompt.id)
        .where(Prompt.iteration_id == iteration_id, Prompt.id.in_(select(Sample.prompt_id).where(Sample.iteration_id == iteration_id)))
        .order_by(Prompt.source, Prompt.item_index)
    ).all()
    samples: dict[int, list[PooledSample]] = defaultdict(list)
    for prompt_id, sample_id, text, token_ids, correct in session.execute(
        select(Sample.prompt_id, Sample.id, Sample.text, Sample.token_ids, Sample.correct)
        .where(Sample.iteration_id == iteration_id).order_by(Sample.prompt_id, Sample.sample_index)
    ):
        samples[prompt_id].append(PooledSample(sample_id, text, list(token_ids), correct))
    judged: dict[int, float] = dict(session.execute(
        select(Sample.prompt_id, func.avg(Judgment.trained_score)).join(Judgment, Judgment.sample_id == Sample.id)
        .where(Sample.iteration_id == iteration_id, Judgment.kind == "llm_judge", Judgment.trained_ok.is_(True))
        .group_by(Sample.prompt_id)).all())
    return [Candidate(p.id, p.text, samples[p.id], p.share, judged.get(p.id)) for p in prompts]


def has_curation(session: Session, iteration_id: int) -> bool:
    return bool(session.scalar(select(func.count()).select_from(Curation).where(Curation.iteration_id == iteration_id)))


def store_curation(session: Session, iteration_id: int, rows: list[dict[str, Any]]) -> None:
    session.add_all(Curation(iteration_id=iteration_id, **row) for row in rows)


def dropped_prompts(session: Session, iteration_id: int) -> set[int]:
    """Prompts a filter dropped in the iteration: select trains on none of their examples."""
    return set(session.scalars(select(Curation.prompt_id).where(
        Curation.iteration_id == iteration_id, Curation.kept.is_(False))))


def curation_summary(session: Session, iteration_id: int) -> list[tuple[str, int, int]]:
    """(filter, prompts it saw, prompts it kept) in the order the filters ran."""
    rows = session.execute(
        select(Curation.position, Curation.filter, func.count(), func.sum(case((Curation.kept.is_(True), 1), else_=0)))
        .where(Curation.iteration_id == iteration_id, Curation.sample_id.is_(None))
        .group_by(Curation.position, Curation.filter).order_by(Curation.position)).all()
    return [(name, seen, int(kept or 0)) for _, name, seen, kept in rows]


def prompt_curation(session: Session, prompt_id: int) -> list[tuple[str, float | None, bool, str | None]]:
    """(filter, score, kept, reason) of every decision on one prompt, in the order the filters ran."""
    return [(name, score, bool(kept), reason) for name, score, kept, reason in session.execute(
        select(Curation.filter, Curation.score, Curation.kept, Curation.reason)
        .where(Curation.prompt_id == prompt_id, Curation.sample_id.is_(None)).order_by(Curation.position))]



def hard_prompts(session: Session, loop_id: int, number: int, options: MineHardConfig) -> list[tuple[str, str]]:
    """(key, text) of iteration `number`'s prompts the policy failed or disagreed on (self_instruct.mine_hard): the
    majority's share at most max_vote_share, the mean judge score at most max_judge_score, or at most
    max_correct_share of its checked samples right. Keys are 'hard:<iteration>.<source>.<item>'."""
    iteration_id = session.scalar(select(Iteration.id).where(Iteration.loop_id == loop_id, Iteration.number == number))
    if iteration_id is None:
        return []
    keys = dict(session.execute(select(Prompt.id, Prompt.source + "." + func.cast(Prompt.item_index, String_()))
                                .where(Prompt.iteration_id == iteration_id)).all())
    out = []
    for c in curation_pool(session, iteration_id):
        share = c.correct_share
        if ((c.vote_share is not None and c.vote_share <= options.max_vote_share)
                or (c.judge_mean is not None and c.judge_mean <= options.max_judge_score)
                or (share is not None and share <= options.max_correct_share)):
            out.append((f"hard:{number}.{keys[c.prompt_id]}", c.text))
    return out

"""The judge phase's reads and writes beyond inserting judgments (`selfloop.phases.judge`,
`selfloop.judging.rewards`): prompts' known answers and wording, per-token statistics of samples, and the
judgments a reward transform rewrites (beside their judged value: `Judgment.reward`)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Row, func, select, update
from sqlalchemy.orm import Session

from selfloop.db.models import Judgment, Prompt, Sample, Vote

TRANSFORMED = ("llm_judge", "vote")  # the kinds a reward transform rewrites


def prompts(session: Session, ids: list[int]) -> dict[int, Row]:
    """Prompt id -> (id, answer, family, task_key, text)."""
    return {r.id: r for r in session.execute(
        select(Prompt.id, Prompt.answer, Prompt.family, Prompt.task_key, Prompt.text).where(Prompt.id.in_(ids)))}


def sample_count(session: Session, iteration_id: int) -> int:
    return session.scalar(select(func.count()).select_from(Sample).where(Sample.iteration_id == iteration_id)) or 0


def token_stats(session: Session, ids: list[int]) -> dict[int, Row]:
    """Sample id -> (id, token_entropies, token_self_certainties)."""
    return {r.id: r for r in session.execute(
        select(Sample.id, Sample.token_entropies, Sample.token_self_certainties).where(Sample.id.in_(ids)))}


def store_token_stats(session: Session, stats: dict[int, tuple[list[float], list[float]]]) -> None:
    """Keep per-token entropies and self-certainties computed after the rollout (teacher-forced)."""
    for sample_id, (entropies, certainties) in stats.items():
        session.execute(update(Sample).where(Sample.id == sample_id).values(
            token_entropies=entropies, token_self_certainties=certainties))


def to_transform(session: Session, iteration_id: int, texts: bool = False) -> list[Row]:
    """The iteration's LLM-judge and vote judgments no transform has touched, each with its sample's prompt, index and
    correctness and the prompt's source and index (with `texts`, also the sample's and prompt's text and the prompt's
    answer: what a reward function reads), in the order the loop drew them."""
    read = (Sample.text.label("sample_text"), Prompt.text.label("prompt_text"), Prompt.answer) if texts else ()
    rows = session.execute(
        select(Judgment, Sample.prompt_id, Sample.sample_index, Sample.correct, Prompt.source, Prompt.item_index, *read)
        .join(Sample, Sample.id == Judgment.sample_id).join(Prompt, Prompt.id == Sample.prompt_id)
        .where(Sample.iteration_id == iteration_id, Judgment.kind.in_(TRANSFORMED), Judgment.reward_mode.is_(None))
        .order_by(Prompt.source, Prompt.item_index, Sample.sample_index, Judgment.judge_index)).all()
    return list(rows)


def signal_scores(session: Session, iteration_id: int, signal: str) -> Sequence[Row]:
    """(sample id, prompt id, score, parse_ok) of one signal's judgments in the iteration, by prompt and sample."""
    return session.execute(
        select(Sample.id, Sample.prompt_id, Judgment.score, Judgment.parse_ok)
        .join(Judgment, Judgment.sample_id == Sample.id)
        .where(Sample.iteration_id == iteration_id, Judgment.kind == signal)
        .order_by(Sample.prompt_id, Sample.sample_index)).all()


def vote_rows(session: Session, iteration_id: int) -> Sequence[Row]:
    """(share, n_valid, n_votes, correct) of each of the iteration's votes."""
    return session.execute(select(Vote.share, Vote.n_valid, Vote.n_votes, Vote.correct)
                           .join(Prompt, Prompt.id == Vote.prompt_id).where(Prompt.iteration_id == iteration_id)).all()


def judgment_rows(session: Session, iteration_id: int) -> Sequence[Row]:
    """(kind, score, parse_ok, details, sample id, prompt id, sample index) of each of the iteration's judgments, the
    score and parse_ok those training reads (a reward transform's where one was applied)."""
    return session.execute(
        select(Judgment.kind, Judgment.trained_score, Judgment.trained_ok, Judgment.details, Sample.id, Sample.prompt_id,
               Sample.sample_index)
        .join(Sample, Sample.id == Judgment.sample_id).where(Sample.iteration_id == iteration_id)).all()


def graded_verdicts(session: Session, iteration_id: int) -> Sequence[Row]:
    """(score, raw, sample id, correct, prompt id) of each readable LLM-judge verdict on a sample whose correctness
    is known, in the order the loop drew them: what judge fine-tuning (EFT) learns from."""
    return session.execute(
        select(Judgment.trained_score, Judgment.raw, Sample.id, Sample.correct, Prompt.id)
        .join(Sample, Sample.id == Judgment.sample_id).join(Prompt, Prompt.id == Sample.prompt_id)
        .where(Sample.iteration_id == iteration_id, Judgment.kind == "llm_judge", Judgment.trained_ok.is_(True),
               Sample.correct.is_not(None))
        .order_by(Prompt.source, Prompt.item_index, Sample.sample_index, Judgment.judge_index)).all()

"""Calibration of the self-judging signals against ground truth, wherever a prompt has a known answer.

A self-judge that drifts away from the truth is the known failure mode of self-rewarding, so these
are stored per iteration (table `metrics`, names `judge.*`):
  judge.label_accuracy     TTRL: share of prompts whose majority answer equals the known answer
  judge.reward_accuracy    TTRL: share of samples whose agreement reward equals their true correctness
  judge.llm_pick_accuracy  LLM judge: where a prompt has both correct and wrong samples, how often the
                           sample with the highest mean judge score is a correct one
plus the signals' own health: vote share, valid-vote rate, judge parse rate and mean score, and
(scoring 'distribution') judge.valid_mass, the mean probability the judge put on a valid score.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from selfloop.db.models import Judgment, Prompt, Sample, Vote
from selfloop.db.queries import set_metric


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def calibrate(session: Session, iteration_id: int) -> dict[str, float]:
    votes = session.execute(
        select(Vote.share, Vote.n_valid, Vote.n_votes, Vote.correct).join(Prompt, Prompt.id == Vote.prompt_id)
        .where(Prompt.iteration_id == iteration_id)
    ).all()
    judgments = session.execute(
        select(Judgment.kind, Judgment.score, Judgment.parse_ok, Judgment.details, Sample.id, Sample.prompt_id, Sample.sample_index)
        .join(Sample, Sample.id == Judgment.sample_id).where(Sample.iteration_id == iteration_id)
    ).all()
    truth: dict[int, bool] = {}  # sample -> correct, where its prompt has a known answer
    judge_scores: dict[int, list[float]] = defaultdict(list)
    rewards: dict[int, float] = {}
    parse, masses = [], []
    for kind, score, ok, details, sample_id, _, _ in judgments:
        if kind == "vote":
            rewards[sample_id] = score
            if details and details.get("correct") is not None:
                truth[sample_id] = details["correct"]
        elif kind == "llm_judge":
            parse.append(1.0 if ok else 0.0)
            if details and details.get("scoring") == "distribution":
                masses.append(details["mass"])
            if ok:
                judge_scores[sample_id].append(score)
    metrics: dict[str, float | None] = {
        "judge.vote_share": _mean([v.share for v in votes]),
        "judge.valid_vote_rate": _mean([v.n_valid / v.n_votes for v in votes if v.n_votes]),
        "judge.label_accuracy": _mean([1.0 if v.correct else 0.0 for v in votes if v.correct is not None]),
        "judge.reward_accuracy": _mean([1.0 if (rewards[s] == 1.0) == truth[s] else 0.0 for s in truth if s in rewards]),
        "judge.parse_rate": _mean(parse),
        "judge.mean_score": _mean([x for xs in judge_scores.values() for x in xs]),
        "judge.valid_mass": _mean(masses),
    }
    # The LLM judge's pick: per prompt, the sample with the highest mean score (first on ties).
    by_prompt: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for _, _, _, _, sample_id, prompt_id, index in judgments:
        if sample_id in truth and judge_scores.get(sample_id) and (sample_id, index) not in by_prompt[prompt_id]:
            by_prompt[prompt_id].append((sample_id, index))
    picks = []
    for candidates in by_prompt.values():
        if len({truth[s] for s, _ in candidates}) < 2:
            continue  # all right or all wrong: the judge's choice cannot matter
        best = max(sorted(candidates, key=lambda c: c[1]), key=lambda c: _mean(judge_scores[c[0]]))
        picks.append(1.0 if truth[best[0]] else 0.0)
    metrics["judge.llm_pick_accuracy"] = _mean(picks)
    metrics["judge.llm_pick_n"] = float(len(picks)) if picks else None
    stored = {k: v for k, v in metrics.items() if v is not None}
    for name, value in stored.items():
        set_metric(session, iteration_id, name, value)
    return stored

"""Calibration of the self-judging signals against ground truth, wherever a prompt has a known answer.

A self-judge that drifts away from the truth is the known failure mode of self-rewarding, so these
are stored per iteration (table `metrics`, names `judge.*`):
  judge.label_accuracy     TTRL: share of prompts whose majority answer equals the known answer
  judge.reward_accuracy    TTRL: share of samples whose agreement reward equals their true correctness
  judge.rewarded_right     TTRL: of the samples rewarded 1 whose correctness is known, the share that is right
  judge.llm_pick_accuracy  LLM judge: where a prompt has both correct and wrong samples, how often the
                           sample with the highest mean judge score is a correct one
  judge.llm_pair_accuracy  LLM judge, reward accuracy on pairs: over every (correct, wrong) pair of
                           samples of one prompt, how often the correct one scores higher (ties: half)
  judge.llm_auc            LLM judge: the same over all (correct, wrong) pairs of the iteration, i.e.
                           the area under the ROC curve of the mean score as a detector of correctness
Correctness is each sample checked against its prompt's known answer by the prompt's task family, as the judge
phase stored it (`samples.correct`).
plus the signals' own health: vote share, valid-vote rate, judge parse rate and mean score, and
(scoring 'distribution') judge.valid_mass, the mean probability the judge put on a valid score.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy.orm import Session

from selfloop.db import judging
from selfloop.db.queries import correctness, set_metric


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _score(values: list[float]) -> float:
    """The mean of a sample's (non-empty) valid judge scores."""
    return sum(values) / len(values)


def ranking_accuracy(pairs: list[tuple[float, float]]) -> float | None:
    """Share of (correct's score, wrong's score) pairs ranked right, a tie counting half (Mann-Whitney)."""
    if not pairs:
        return None
    return sum(1.0 if c > w else 0.5 if c == w else 0.0 for c, w in pairs) / len(pairs)


def auc(right: list[float], wrong: list[float]) -> float | None:
    """ranking_accuracy over every (right, wrong) pair, from ranks (Mann-Whitney U) in O(n log n)."""
    if not right or not wrong:
        return None
    scored = sorted([(x, 1) for x in right] + [(x, 0) for x in wrong])
    rank_sum, i = 0.0, 0
    while i < len(scored):
        j = i
        while j < len(scored) and scored[j][0] == scored[i][0]:
            j += 1
        mid_rank = (i + 1 + j) / 2  # ranks i+1..j share their mean
        rank_sum += mid_rank * sum(flag for _, flag in scored[i:j])
        i = j
    n1, n2 = len(right), len(wrong)
    return (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n2)


def calibrate(session: Session, iteration_id: int) -> dict[str, float]:
    votes = judging.vote_rows(session, iteration_id)
    judgments = judging.judgment_rows(session, iteration_id)
    truth = correctness(session, iteration_id)  # sample -> correct, where its prompt has a known answer
    judge_scores: dict[int, list[float]] = defaultdict(list)
    rewards: dict[int, float] = {}
    parse, masses = [], []
    for kind, score, ok, details, sample_id, _, _ in judgments:
        if kind == "vote":
            rewards[sample_id] = score
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
        "judge.rewarded_right": _mean([1.0 if truth[s] else 0.0 for s in truth if rewards.get(s) == 1.0]),
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
        best = max(sorted(candidates, key=lambda c: c[1]), key=lambda c: _score(judge_scores[c[0]]))
        picks.append(1.0 if truth[best[0]] else 0.0)
    metrics["judge.llm_pick_accuracy"] = _mean(picks)
    metrics["judge.llm_pick_n"] = float(len(picks)) if picks else None
    # Ranking by the mean score: within each prompt (reward accuracy on pairs) and across the iteration (AUC).
    mean_score = {s: _score(judge_scores[s]) for s in truth if judge_scores.get(s)}
    prompt_of = {sample_id: prompt_id for _, _, _, _, sample_id, prompt_id, _ in judgments}
    right = [s for s in mean_score if truth[s]]
    wrong = [s for s in mean_score if not truth[s]]
    within = [(mean_score[c], mean_score[w]) for c in right for w in wrong if prompt_of[c] == prompt_of[w]]
    metrics["judge.llm_pair_accuracy"] = ranking_accuracy(within)
    metrics["judge.llm_pair_n"] = float(len(within)) if within else None
    metrics["judge.llm_auc"] = auc([mean_score[s] for s in right], [mean_score[s] for s in wrong])
    stored = {k: v for k, v in metrics.items() if v is not None}
    for name, value in stored.items():
        set_metric(session, iteration_id, name, value)
    return stored

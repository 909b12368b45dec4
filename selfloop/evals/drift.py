"""Drift monitors: the quiet failure modes of self-improvement, recorded every iteration.

  drift.mean_response_tokens  length of the rollouts (self-rewarding's length bias)
  drift.judge_score           mean LLM-judge score; inflation = it rises while the held-out metric does not
  drift.mean_token_logprob    mean token log-prob of the rollouts; near 0 means the policy has sharpened
                              onto single answers (TTRL/RLSC collapse)
  drift.vote_share            mean share of the majority answer
  drift.distinct_2            distinct word bigrams over all bigrams of the rollouts (diversity; RAFT's reward
                              hacking snowballed as it fell)
  drift.answer_entropy        mean over prompts of the entropy (nats) of the samples' extracted answers (a
                              prompt's answers collapsing onto one; needs the vote signal)
  drift.duplicate_share       share of samples whose text repeats an earlier sample of the same prompt
  drift.self_certainty        mean over the samples of their mean token self-certainty (Intuitor's score: the
                              distributions' distance from uniform; it rises as the policy sharpens)
  drift.kl_from_start         KL(current policy || the loop's starting model) per token, estimated on the first
                              eval.drift.kl_samples rollouts (drawn from the current policy) from their log-probs
                              under both at temperature 1; 0 in an iteration that starts from the base model
                              (exact for rollouts sampled at temperature 1, as the demos; at another temperature
                              the samples come from the tempered policy and the figure estimates on them)
The length, judge-score, log-prob and vote-share monitors have thresholds in eval.drift; crossing one logs a
warning and stores an event. The others are collapse monitors for the lab's long runs: metrics, no warnings.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy.orm import Session

from selfloop.config import Config
from selfloop.db import monitors
from selfloop.db.models import Judgment, Sample
from selfloop.db.queries import add_event, set_metric, voted_samples
from selfloop.judging.vote import answer_entropy


def _main(session: Session, iteration_id: int, main: str, role: str) -> float | None:
    suite, _, metric = main.partition("/")
    return monitors.eval_value(session, iteration_id, role, suite, metric)


def distinct_2(texts: Iterable[str]) -> float | None:
    """Distinct word bigrams over all word bigrams of the texts (Li et al. 2016's distinct-2): the samples' diversity,
    whose fall is reward hacking snowballing (RAFT's report); None without any bigram."""
    seen: set[tuple[str, str]] = set()
    total = 0
    for text in texts:
        words = text.split()
        bigrams = list(zip(words, words[1:]))
        seen.update(bigrams)
        total += len(bigrams)
    return len(seen) / total if total else None


def answer_entropy_mean(session: Session, iteration_id: int) -> float | None:
    """Mean over the iteration's voted prompts of the entropy of their samples' extracted answers."""
    answers: dict[int, list[str | None]] = defaultdict(list)
    for prompt_id, answer in voted_samples(session, iteration_id, Sample.prompt_id, Judgment.answer):
        answers[prompt_id].append(answer)
    return sum(answer_entropy(a) for a in answers.values()) / len(answers) if answers else None


def self_certainty_mean(session: Session, iteration_id: int) -> float | None:
    """Mean over the iteration's samples of their mean token self-certainty (Intuitor's score), where recorded."""
    scores = [sum(v) / len(v) for v in monitors.self_certainties(session, iteration_id)]
    return sum(scores) / len(scores) if scores else None


def duplicate_share(session: Session, iteration_id: int) -> float | None:
    """Share of the iteration's samples whose text (stripped) repeats an earlier sample of the same prompt."""
    seen: set[tuple[int, str]] = set()
    total = repeats = 0
    for prompt_id, text in monitors.sample_texts(session, iteration_id):
        key = (prompt_id, text.strip())
        repeats += key in seen
        seen.add(key)
        total += 1
    return repeats / total if total else None


def kl_per_token(current: list[list[float]], start: list[list[float]]) -> float | None:
    """KL(current || start) per token from samples drawn from `current`: the mean over all their tokens of
    log current - log start (the k1 estimator, unbiased for samples of the current policy)."""
    diffs = [a - b for cur, st in zip(current, start, strict=True) for a, b in zip(cur, st, strict=True)]
    return sum(diffs) / len(diffs) if diffs else None


def monitor(session: Session, config: Config, loop_id: int, iteration_id: int, number: int,
            kl_from_start: float | None = None) -> dict[str, float]:
    length, logprob = monitors.length_and_logprob(session, iteration_id)
    found: dict[str, float | None] = {
        "drift.answer_entropy": answer_entropy_mean(session, iteration_id),
        "drift.duplicate_share": duplicate_share(session, iteration_id),
        "drift.kl_from_start": kl_from_start,
        "drift.distinct_2": distinct_2(text for _, text in monitors.sample_texts(session, iteration_id)),
        "drift.mean_response_tokens": length,
        "drift.mean_token_logprob": logprob,
        "drift.judge_score": monitors.metric_value(session, iteration_id, "judge.mean_score"),
        "drift.vote_share": monitors.metric_value(session, iteration_id, "judge.vote_share"),
        "drift.self_certainty": self_certainty_mean(session, iteration_id),
    }
    now = {k: float(v) for k, v in found.items() if v is not None}
    for name, value in now.items():
        set_metric(session, iteration_id, name, value)
    first_id = monitors.first_iteration(session, loop_id) or iteration_id  # the loop's first iteration (this one, at least)
    first = {k: monitors.metric_value(session, first_id, k) for k in now} if first_id != iteration_id else {}
    d = config.eval.drift
    warnings = []
    start_length = first.get("drift.mean_response_tokens")
    if start_length and now["drift.mean_response_tokens"] > d.max_length_growth * start_length:
        warnings.append(("drift.length", f"mean response length {now['drift.mean_response_tokens']:.1f} tokens is over "
                         f"{d.max_length_growth}x the first iteration's {first['drift.mean_response_tokens']:.1f}"))
    start_judge = first.get("drift.judge_score")
    if start_judge is not None and "drift.judge_score" in now:
        rise = now["drift.judge_score"] - start_judge
        metric = config.eval.main_metric
        held_now = _main(session, iteration_id, metric, "candidate") or _main(session, iteration_id, metric, "baseline")
        held_first = _main(session, first_id, config.eval.main_metric, "baseline")
        if rise >= d.judge_inflation and held_now is not None and held_first is not None and held_now <= held_first:
            warnings.append(("drift.judge_inflation", f"mean judge score rose by {rise:.2f} since iteration 1 while "
                             f"{config.eval.main_metric} did not ({held_first:.3f} -> {held_now:.3f})"))
    if "drift.mean_token_logprob" in now and now["drift.mean_token_logprob"] > d.min_mean_logprob:
        warnings.append(("drift.sharpening", f"mean token log-prob {now['drift.mean_token_logprob']:.4f} is above "
                         f"{d.min_mean_logprob}: the policy is collapsing onto single answers"))
    if "drift.vote_share" in now and now["drift.vote_share"] >= d.max_vote_share:
        warnings.append(("drift.vote_collapse", f"mean vote share {now['drift.vote_share']:.3f} reached {d.max_vote_share}"))
    for kind, message in warnings:
        add_event(session, loop_id, iteration_id, kind, f"iteration {number}: {message}", level="warning", data=now)
    return now

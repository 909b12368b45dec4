"""R-Tuning in its certainty form (Zhang et al. 2024, "R-Tuning: instructing large language models to say 'I don't
know'"; shizhediao/R-Tuning training/pararel/run_pararel.py, evaluation/pararel/evaluate.py).

Labels: a prompt is *sure* when the policy answers it right ('checked': its majority answer over the iteration's
samples equals the known answer; prompts without one are skipped) or, without labels (R-Tuning-U, 'entropy'), when
the entropy of its samples' extracted answers (natural log, an unreadable answer counted as one more answer) is in
the lower half: prompts ranked by entropy, the first floor(n/2) sure, ties in prompt order.
Target, the completion trained on: "{answer}. {question} I am sure." or "... I am unsure.", where the answer is the
known answer ('checked') or the majority's ('entropy') for sure and unsure prompts alike: the paper trains the gold
answer in both cases (a copy that drops it for unsure prompts trains refusals, R-Tuning-R, another method).
Loss: the target's negative log-likelihood per token, L = -(1/|y|) sum_t log pi(y_t | x, y_<t).
Held-out (the evaluate phase, per suite and policy): after the item's greedy response, "{response}. {question} I am",
then the probabilities of " sure" and " unsure" (their first tokens, as the paper's evaluation reads them; each
word's whole token sequence where the two share their first token), confidence
c = P(sure) / (P(sure) + P(unsure)); stored as `sure_ap`, the average precision of c against the items' correctness
(sklearn's average_precision_score: sum over thresholds of (R_n - R_{n-1}) * P_n), and `mean_sure`, the mean c.
Where we depart: the paper's 'sure' is its greedy answer (15 tokens, cut at '.') containing the gold answer; here the
loop's sampled rollouts vote, and the majority answer stands for what the policy answers. Its AP script averages
P(sure) with the answer's geometric-mean token probability: we report P(sure)'s average precision alone. Its
R-Tuning-U script resets its list inside the loop over questions (only the last one is ranked); every prompt is
ranked here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from sqlalchemy.orm import Session

from selfloop.algorithms.items import LogpFn, TrainItem
from selfloop.algorithms.rest import item_nll
from selfloop.algorithms.rtuning_config import RTuningConfig
from selfloop.algorithms.spec import chosen_options
from selfloop.db import judging, selection
from selfloop.db.models import Judgment, Sample
from selfloop.db.queries import voted_samples
from selfloop.judging.vote import answer_entropy

if TYPE_CHECKING:
    from selfloop.adapters import Adapter
    from selfloop.config import Config
    from selfloop.engines.base import Engine


def target(answer: str, sure: bool, cfg: RTuningConfig) -> str:
    """The completion trained on: the answer, then the certainty question and its answer."""
    return f"{answer}. {cfg.question} I am {cfg.sure if sure else cfg.unsure}."


def lower_half(entropies: list[float]) -> list[bool]:
    """Sure for the first floor(n/2) prompts by entropy, ties in the given order."""
    order = sorted(range(len(entropies)), key=lambda i: entropies[i])
    sure = set(order[: len(entropies) // 2])
    return [i in sure for i in range(len(entropies))]


def select(session: Session, iteration_id: int, config: Config) -> list[dict]:
    cfg = chosen_options(config, RTuningConfig)
    answers: dict[int, list[str | None]] = {}
    for prompt_id, answer in voted_samples(session, iteration_id, Sample.prompt_id, Judgment.answer):
        answers.setdefault(prompt_id, []).append(answer)
    known = {i: p.answer for i, p in judging.prompts(session, list(answers)).items()}
    votes = selection.votes(session, list(answers))
    if cfg.label == "checked":
        rows = [(p, known[p], bool(votes[p].correct)) for p in answers
                if known.get(p) is not None and p in votes]
    else:
        kept = [p for p in answers if p in votes and votes[p].answer is not None]
        sure = lower_half([answer_entropy(answers[p]) for p in kept])
        rows = [(p, votes[p].answer, s) for p, s in zip(kept, sure)]
    return [{"prompt_id": p, "text": target(a, s, cfg), "reward": 1.0 if s else 0.0} for p, a, s in rows if a is not None]


def batch_loss(items: list[TrainItem], policy: LogpFn, cfg: RTuningConfig) -> tuple[torch.Tensor, dict[str, float]]:
    losses = item_nll(items, policy)
    sure = [it.reward for it in items if it.reward is not None]
    return losses.mean(), {"nll_per_token": losses.mean().item(), "sure_share": sum(sure) / len(sure) if sure else 0.0}


def average_precision(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """sum over distinct thresholds, highest first, of (recall gained) * precision; None without a positive."""
    positives = sum(1 for y in labels if y)
    if not positives:
        return None
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    ap = recall = 0.0
    tp = seen = i = 0
    while i < len(order):
        j = i
        while j < len(order) and scores[order[j]] == scores[order[i]]:  # a threshold takes all its ties at once
            tp += bool(labels[order[j]])
            j += 1
        seen, i = j, j
        ap += (tp / positives - recall) * (tp / seen)
        recall = tp / positives
    return ap


def confidences(sure: Sequence[float], unsure: Sequence[float]) -> list[float]:
    """P(sure) / (P(sure) + P(unsure)) from the two log-probabilities."""
    return [1.0 / (1.0 + math.exp(u - s)) if u - s < 700 else 0.0 for s, u in zip(sure, unsure)]


def held_out_metrics(engine: Engine, chats: list, responses: list[str], correct: list[bool], adapter: Adapter | None,
                     cfg: RTuningConfig) -> dict[str, float]:
    """`sure_ap` and `mean_sure` of one suite's items answered by one policy (see the module's docstring)."""
    if not chats:
        return {}
    tok = engine.tokenizer
    words = [tok(f" {w}", add_special_tokens=False)["input_ids"] for w in (cfg.sure, cfg.unsure)]
    prefixes = [tok(f"{r.strip().rstrip('.')}. {cfg.question} I am", add_special_tokens=False)["input_ids"] for r in responses]
    n = len(chats)
    sure: Sequence[float]
    unsure: Sequence[float]
    if words[0][0] != words[1][0]:  # the paper's reading: the two words' first tokens, one forward pass per item
        sure, unsure = zip(*engine.next_token_logprobs(chats, prefixes, [words[0][0], words[1][0]], adapter=adapter))
    else:  # the same first token: each whole word's log-probability
        scored = engine.score([*chats, *chats], [p + words[0] for p in prefixes] + [p + words[1] for p in prefixes],
                              adapter=adapter)
        sure = [sum(lp[-len(words[0]):]) for lp in scored[:n]]
        unsure = [sum(lp[-len(words[1]):]) for lp in scored[n:]]
    c = confidences(sure, unsure)
    out = {"mean_sure": sum(c) / n}
    ap = average_precision(c, correct)
    if ap is not None:
        out["sure_ap"] = ap
    return out

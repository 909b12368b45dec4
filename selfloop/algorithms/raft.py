"""RAFT: reward-ranked fine-tuning (Dong et al. 2023; OptimalScale/LMFlow src/lmflow/pipeline/raft_aligner.py).

Selection: each sample's reward is its mean LLM-judge score (no valid score: minus infinity), and minus infinity
too when the discard filter matches (`discard_patterns`, `discard_truncated`). 'local' keeps each prompt's best
sample (the first of the highest, in sample order); 'top' keeps the highest-rewarded `top_fraction` of all the
iteration's samples (ties in prompt then sample order). Samples at minus infinity are never kept.
Training: supervised fine-tuning of the current policy on the kept samples (unlike ReST-EM, not a fresh adapter
from the base each iteration), the token-mean negative log-likelihood:
    L = -(1/|y|) sum_t log pi(y_t | x, y_<t)
Every loop also records `drift.distinct_2` (distinct word bigrams over all bigrams of the iteration's samples):
RAFT's reward hacking shows as its fall.
Where we depart: LMFlow draws K = 1/top_reward_percentage samples per prompt for 'local'; here K is
generation.samples_per_prompt.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import TYPE_CHECKING

import torch
from sqlalchemy.orm import Session

from selfloop.algorithms.items import LogpFn, TrainItem
from selfloop.algorithms.raft_config import RAFTConfig
from selfloop.algorithms.rest import item_nll
from selfloop.algorithms.spec import chosen_options
from selfloop.db import selection

if TYPE_CHECKING:
    from selfloop.config import Config


def rewards(session: Session, iteration_id: int, cfg: RAFTConfig) -> list[tuple[int, int, float]]:
    """(prompt id, sample id, reward) of every sample of the iteration, in prompt then sample order."""
    rows = selection.judged_samples(session, iteration_id)
    patterns = [re.compile(p) for p in cfg.discard_patterns]
    scores: dict[int, list[float]] = defaultdict(list)
    order: dict[int, tuple[int, str, str]] = {}
    for prompt_id, sample_id, text, finish, score, ok in rows:
        order.setdefault(sample_id, (prompt_id, text, finish))
        if ok and score is not None:
            scores[sample_id].append(score)
    out = []
    for sample_id, (prompt_id, text, finish) in order.items():
        discarded = any(p.search(text) for p in patterns) or (cfg.discard_truncated and finish == "length")
        r = -math.inf if discarded or not scores[sample_id] else sum(scores[sample_id]) / len(scores[sample_id])
        out.append((prompt_id, sample_id, r))
    return out


def choose(rewarded: list[tuple[int, int, float]], mode: str, top_fraction: float) -> list[tuple[int, int, float]]:
    """The kept (prompt id, sample id, reward), in the given order."""
    usable = [r for r in rewarded if r[2] != -math.inf]
    if mode == "local":
        best: dict[int, tuple[int, int, float]] = {}
        for row in usable:
            if row[0] not in best or row[2] > best[row[0]][2]:
                best[row[0]] = row
        kept = set(best.values())
    else:
        n = max(1, int(len(rewarded) * top_fraction)) if usable else 0
        kept = set(sorted(usable, key=lambda r: -r[2])[:n])  # stable: ties keep their order
    return [r for r in usable if r in kept]


def select(session: Session, iteration_id: int, config: Config) -> list[dict]:
    cfg = chosen_options(config, RAFTConfig)
    return [{"prompt_id": p, "sample_id": s, "reward": r} for p, s, r in choose(rewards(session, iteration_id, cfg),
                                                                               cfg.mode, cfg.top_fraction)]


def batch_loss(items: list[TrainItem], policy: LogpFn, cfg: RAFTConfig) -> tuple[torch.Tensor, dict[str, float]]:
    losses = item_nll(items, policy)
    return losses.mean(), {"nll_per_token": losses.mean().item()}

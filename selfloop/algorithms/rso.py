"""RSO: statistical rejection sampling improves preference optimization (Liu et al. 2024, arXiv 2309.06657, App. A.1).

Selection: per prompt, the samples with a valid LLM-judge score (mean over its judgments) are the candidates, keyed by
sample id (the paper's code keys them by text, so duplicates collapse). Repeat until `num_accept` are accepted or
none are left: r_max = the highest reward among those left; in order, each candidate left is accepted when a uniform
draw u < exp((r - r_max) / beta) (the best is always accepted), and accepted ones are removed; the loop stops as soon
as enough are accepted, inside the pass. The draws are seeded by the loop seed, the iteration and the prompt's place,
so a selection is reproducible. The accepted samples are paired in order (first-round pairs: 1-2, 3-4, ...); in each
pair the higher reward is chosen; a tie makes no pair.
Loss, with D = (log pi(y_c|x) - log ref(y_c|x)) - (log pi(y_r|x) - log ref(y_r|x)), the reference being the policy
the iteration started from:
    hinge-norm:   max(0, 1 - gamma * D)          sigmoid-norm:   -log sigma(gamma * D)
(DPO's hinge and sigmoid forms with beta = gamma, as TRL's loss_type="hinge" does.)
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from sqlalchemy.orm import Session

from selfloop.algorithms.dpo import batch_loss as dpo_batch_loss
from selfloop.algorithms.dpo_config import DPOConfig
from selfloop.algorithms.items import LogpFn, TrainItem
from selfloop.algorithms.rso_config import RSOConfig
from selfloop.algorithms.spec import chosen_options
from selfloop.db import selection
from selfloop.db.queries import judged_means

if TYPE_CHECKING:
    from selfloop.config import Config


def rejection_sample(candidates: list[tuple[int, float]], num_accept: int, beta: float,
                     uniform: Callable[[], float]) -> list[tuple[int, float]]:
    """(id, reward) candidates, accepted in order by statistical rejection sampling (see the module docstring)."""
    left = dict(candidates)
    accepted: list[tuple[int, float]] = []
    while left and len(accepted) < num_accept:
        r_max = max(left.values())
        for key, reward in list(left.items()):
            if uniform() >= math.exp((reward - r_max) / beta):
                continue
            accepted.append((key, reward))
            del left[key]
            if len(accepted) == num_accept:
                break
    return accepted


def first_round_pairs(accepted: list[tuple[int, float]]) -> list[tuple[int, int, float]]:
    """(chosen, rejected, reward gap) of the pairs 1-2, 3-4, ...; ties make none."""
    pairs = []
    for (a, ra), (b, rb) in zip(accepted[0::2], accepted[1::2]):
        if ra != rb:
            pairs.append((a, b, ra - rb) if ra > rb else (b, a, rb - ra))
    return pairs


def select(session: Session, iteration_id: int, config: Config) -> list[dict]:
    cfg = chosen_options(config, RSOConfig)
    number = selection.iteration_number(session, iteration_id)
    places = selection.prompt_places(session, iteration_id)
    out = []
    for prompt_id, candidates in sorted(judged_means(session, iteration_id).items(), key=lambda kv: places[kv[0]]):
        source, item_index = places[prompt_id]
        key = f"{config.loop.seed}:rso:{number}:{source}:{item_index}".encode()
        rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
        for chosen, rejected, gap in first_round_pairs(rejection_sample(candidates, cfg.num_accept, cfg.beta, rng.random)):
            out.append({"prompt_id": prompt_id, "sample_id": chosen, "rejected_sample_id": rejected, "reward": gap})
    return out


def batch_loss(items: list[TrainItem], policy: LogpFn, cfg: RSOConfig) -> tuple[torch.Tensor, dict[str, float]]:
    return dpo_batch_loss(items, policy, DPOConfig(beta=cfg.gamma, kind=cfg.loss))

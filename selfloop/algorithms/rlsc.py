"""RLSC: reinforcement learning via self-confidence (Li et al. 2025, "Confidence is all you need").

Selection: every sample of the iteration, with p_old(y|x) as stored at rollout (the log-probability
under the distribution the frozen policy sampled from).

Loss, with sequence log-probabilities (summed over completion tokens):
    L = -(p_old(y|x) + alpha) * log p(y|x),   p_old = exp(old_logps), treated as a constant
A few optimiser steps per iteration (the paper: 10-20 steps, 16 samples per prompt, T = 0.5, alpha 0.1).
Where we depart: none in the formula; p_old of a long completion is tiny, so alpha dominates its
weight, as in the paper.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from sqlalchemy.orm import Session

from selfloop.algorithms.items import LogpFn, TrainItem, stack, sums
from selfloop.algorithms.rlsc_config import RLSCConfig
from selfloop.db import selection

if TYPE_CHECKING:
    from selfloop.config import Config



def loss(logps: torch.Tensor, old_logps: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """Per-sample RLSC loss: -(exp(old_logps) + alpha) * logps (the weight carries no gradient)."""
    return -(torch.exp(old_logps.detach()) + alpha) * logps


def select(session: Session, iteration_id: int, config: Config) -> list[dict]:
    rows = selection.sampled_logps(session, iteration_id)
    return [{"prompt_id": p, "sample_id": s, "sampling_logp": old} for p, s, old in rows]


def batch_loss(items: list[TrainItem], policy: LogpFn, cfg: RLSCConfig) -> tuple[torch.Tensor, dict[str, float]]:
    logps = sums(policy([it.prompt for it in items], [it.completion for it in items]))
    old = stack([it.sampling_logp for it in items], logps.device)
    return loss(logps, old, alpha=cfg.alpha).mean(), {"mean_logp": logps.mean().item(), "mean_old_logp": old.mean().item()}

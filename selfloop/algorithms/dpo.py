"""DPO on self-judged pairs: Self-Rewarding Language Models (Yuan et al. 2024).

Selection: per prompt, the sample with the highest mean LLM-judge score is chosen and the one with
the lowest is rejected; prompts with fewer than two validly scored samples, and ties (highest equals
lowest), are dropped. The reference is the policy the iteration started from (the paper's M_t).

Loss (Rafailov et al. 2023), with log-probabilities summed over completion tokens:
    h = (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))
    sigmoid:  -log sigma(beta * h)
    ipo:      (h - 1/(2 beta))^2                      (Azar et al. 2023)
    hinge:    max(0, 1 - beta * h)                     (SLiC, Zhao et al. 2023)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from sqlalchemy.orm import Session

from selfloop.algorithms.dpo_config import DPOConfig
from selfloop.algorithms.items import LogpFn, TrainItem, known, stack, sums
from selfloop.algorithms.spec import chosen_options
from selfloop.db.queries import judged_means

if TYPE_CHECKING:
    from selfloop.config import Config



def loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    kind: str = "sigmoid",
) -> torch.Tensor:
    """Per-pair DPO loss; see the module docstring for the formulas."""
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    if kind == "sigmoid":
        return -F.logsigmoid(beta * h)  # stable for large |h|
    if kind == "ipo":
        return (h - 1.0 / (2.0 * beta)) ** 2
    if kind == "hinge":
        return torch.relu(1.0 - beta * h)
    raise ValueError(f"unknown DPO loss kind {kind!r}")


def judged_pairs(session: Session, iteration_id: int, min_gap: float) -> list[tuple[int, int, int, float, float]]:
    """(prompt_id, chosen sample, rejected sample, best mean score, worst mean score) per usable prompt."""
    pairs = []
    for prompt_id, scored in judged_means(session, iteration_id).items():
        if len(scored) < 2:
            continue
        means = [(mean, sample_id) for sample_id, mean in scored]  # sample order kept
        best = max(means, key=lambda m: m[0])  # first of the highest
        worst = min(means, key=lambda m: m[0])  # first of the lowest
        if best[0] - worst[0] > min_gap:
            pairs.append((prompt_id, best[1], worst[1], best[0], worst[0]))
    return pairs


def select(session: Session, iteration_id: int, config: Config) -> list[dict]:
    return [
        {"prompt_id": p, "sample_id": c, "rejected_sample_id": r, "reward": hi - lo}
        for p, c, r, hi, lo in judged_pairs(session, iteration_id, chosen_options(config, DPOConfig).min_score_gap)
    ]


def batch_loss(items: list[TrainItem], policy: LogpFn, cfg: DPOConfig) -> tuple[torch.Tensor, dict[str, float]]:
    n = len(items)
    rejected = [known(it.rejected, "rejected") for it in items]
    logps = sums(policy([it.prompt for it in items] * 2, [it.completion for it in items] + rejected))
    device = logps.device
    ref_c, ref_r = stack([it.ref_logp for it in items], device), stack([it.ref_rejected_logp for it in items], device)
    losses = loss(logps[:n], logps[n:], ref_c, ref_r, beta=cfg.beta, kind=cfg.kind)
    chosen, rejected = (cfg.beta * (logps[:n] - ref_c)).detach(), (cfg.beta * (logps[n:] - ref_r)).detach()
    margin = chosen - rejected
    # The figures TRL's DPOTrainer logs, under its names (implicit rewards beta * (log pi - log ref), summed
    # log-probs), beside selfloop's older two (reward_margin and reward_accuracy: the same margin and accuracy).
    return losses.mean(), {
        "rewards/chosen": chosen.mean().item(), "rewards/rejected": rejected.mean().item(),
        "rewards/margins": margin.mean().item(), "rewards/accuracies": (margin > 0).float().mean().item(),
        "logps/chosen": logps[:n].detach().mean().item(), "logps/rejected": logps[n:].detach().mean().item(),
        "reward_margin": margin.mean().item(), "reward_accuracy": (margin > 0).float().mean().item()}

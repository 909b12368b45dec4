"""ORPO: monolithic preference optimisation without a reference model (Hong et al. 2024).

Selection: the same self-judged pairs as DPO (best vs worst mean judge score per prompt).

Loss, with per-token MEAN log-probabilities (the paper's length-normalised likelihood):
    log odds(p) = log p - log(1 - p),   p = exp(mean log-prob)
    L = -mean_logp(y_w|x) - lam * log sigma(log odds(y_w|x) - log odds(y_l|x))
The first term is the SFT loss on the chosen response.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from sqlalchemy.orm import Session

from selfloop.algorithms.dpo import judged_pairs
from selfloop.algorithms.items import LogpFn, TrainItem, known, means
from selfloop.algorithms.orpo_config import ORPOConfig
from selfloop.algorithms.spec import chosen_options

if TYPE_CHECKING:
    from selfloop.config import Config



def _log_odds(mean_logps: torch.Tensor) -> torch.Tensor:
    # log p - log(1 - p) with log(1 - exp(x)) computed as log(-expm1(x)): exact for p near 0 and 1.
    return mean_logps - torch.log(-torch.expm1(mean_logps.clamp(max=-1e-6)))


def loss(chosen_mean_logps: torch.Tensor, rejected_mean_logps: torch.Tensor, lam: float = 0.1) -> torch.Tensor:
    """Per-pair ORPO loss; see the module docstring."""
    ratio = _log_odds(chosen_mean_logps) - _log_odds(rejected_mean_logps)
    return -chosen_mean_logps - lam * F.logsigmoid(ratio)


def select(session: Session, iteration_id: int, config: Config) -> list[dict]:
    return [
        {"prompt_id": p, "sample_id": c, "rejected_sample_id": r, "reward": hi - lo}
        for p, c, r, hi, lo in judged_pairs(session, iteration_id, chosen_options(config, ORPOConfig).min_score_gap)
    ]


def batch_loss(items: list[TrainItem], policy: LogpFn, cfg: ORPOConfig) -> tuple[torch.Tensor, dict[str, float]]:
    n = len(items)
    m = means(policy([it.prompt for it in items] * 2, [it.completion for it in items] + [known(it.rejected, "rejected") for it in items]))
    losses = loss(m[:n], m[n:], lam=cfg.lam)
    with torch.no_grad():
        accuracy = (_log_odds(m[:n]) > _log_odds(m[n:])).float().mean().item()
    return losses.mean(), {"chosen_mean_logp": m[:n].mean().item(), "odds_accuracy": accuracy}

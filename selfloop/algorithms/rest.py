"""ReST-EM: expectation-maximisation with binary rewards (Singh et al. 2024, "Beyond human data").

E-step (selection): samples of the current policy with reward 1 are kept, at most K per prompt (the
first K in sample order). The binary reward is agreement with the known answer where the prompt has
one, else agreement with the majority answer ('auto'); or always one of the two.
M-step: the adapter is trained afresh from the base model each iteration, not from the previous
iteration's adapter (the paper fine-tunes the base model on the latest E-step's data).

Loss: negative log-likelihood of the kept samples, averaged over each sample's tokens:
    L = -(1/|y|) * sum_t log p(y_t | x, y_<t)
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import torch
from sqlalchemy.orm import Session

from selfloop.algorithms.items import LogpFn, TrainItem, sums
from selfloop.algorithms.rest_config import RestConfig
from selfloop.algorithms.spec import chosen_options
from selfloop.db.models import Judgment, Sample
from selfloop.db.queries import voted_samples

if TYPE_CHECKING:
    from selfloop.config import Config



def loss(logps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-sample NLL per token: -logps / lengths (logps summed over the sample's tokens)."""
    return -logps / lengths.clamp(min=1)


def reward(mode: str, agrees_majority: float, correct: bool | None) -> float:
    if mode == "majority" or (mode == "auto" and correct is None):
        return agrees_majority
    return 1.0 if correct else 0.0


def kept_samples(session: Session, iteration_id: int, mode: str, max_per_prompt: int) -> list[dict]:
    """The E-step: samples with reward 1 under `mode`, the first `max_per_prompt` of each prompt in sample order
    (CoIN keeps its targets by the same rule)."""
    rows = voted_samples(session, iteration_id, Sample.prompt_id, Sample.id, Judgment.trained_score, Sample.correct)
    kept: dict[int, int] = defaultdict(int)
    out = []
    for prompt_id, sample_id, agrees, correct in rows:  # correct: as the judge phase graded it (None: no answer)
        r = reward(mode, agrees or 0.0, correct)
        if r == 1.0 and kept[prompt_id] < max_per_prompt:
            kept[prompt_id] += 1
            out.append({"prompt_id": prompt_id, "sample_id": sample_id, "reward": r})
    return out


def select(session: Session, iteration_id: int, config: Config) -> list[dict]:
    cfg = chosen_options(config, RestConfig)
    return kept_samples(session, iteration_id, cfg.reward, cfg.max_per_prompt)


def item_nll(items: list[TrainItem], policy: LogpFn) -> torch.Tensor:
    """Each item's completion NLL per token under the policy (the supervised loss of ReST-EM, RAFT, R-Tuning)."""
    logps = sums(policy([it.prompt for it in items], [it.completion for it in items]))
    lengths = torch.tensor([len(it.completion) for it in items], dtype=torch.float32, device=logps.device)
    return loss(logps, lengths)


def batch_loss(items: list[TrainItem], policy: LogpFn, cfg: RestConfig) -> tuple[torch.Tensor, dict[str, float]]:
    losses = item_nll(items, policy)
    return losses.mean(), {"nll_per_token": losses.mean().item()}

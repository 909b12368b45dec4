"""EM-FT: entropy minimisation by fine-tuning (Agarwal et al. 2025, "The unreasonable effectiveness of entropy
minimization in LLM reasoning", arXiv 2505.15134).

Selection: the policy's own samples of the iteration, unlabelled and unjudged (the first `max_per_prompt` of each
prompt, in sample order; all by default). No reward, no vote and no reference model.

Loss: the token-level entropy of the policy on those samples, teacher-forced, as the paper defines it (Eq. 2):
    H_tok(y) = (1/|y|) * sum_t H(p(. | x, y_<t)),   H(p) = -sum_j p_j log p_j,   L = mean over the batch of H_tok
with p = softmax(logits / temperature). Minimising it moves mass onto the tokens the policy already prefers, on
the paths it samples: it sharpens whatever the model believes (METHODS.md: keep the shuffled control and the oracle
beside it). EM-RL, the same quantity as a reward (`judge.reward: entropy`), is the RL form.
Where we depart: the paper's training code is not released (shivamag125/EM_PT holds its evaluation only); the
samples come from the iteration's rollout (drawn at the loop's temperature by the policy that starts the
iteration), and `temperature` is one-shot EM's (arXiv 2505.20282) logit temperature, 1 by default.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import torch
from sqlalchemy.orm import Session

from selfloop.algorithms.emft_config import EMFTConfig
from selfloop.algorithms.items import LogpFn, TrainItem
from selfloop.algorithms.spec import chosen_options
from selfloop.db import selection

if TYPE_CHECKING:
    from selfloop.config import Config


def loss(entropies: list[torch.Tensor]) -> torch.Tensor:
    """Per-sample token-level entropy: the mean of each row's per-token entropies (an empty row counts 0)."""
    return torch.stack([e.mean() if e.numel() else e.new_zeros(()) for e in entropies])


def select(session: Session, iteration_id: int, config: Config) -> list[dict]:
    cap = chosen_options(config, EMFTConfig).max_per_prompt
    taken: defaultdict[int, int] = defaultdict(int)
    out = []
    for prompt_id, sample_id, _ in selection.sampled_logps(session, iteration_id):  # in sample order per prompt
        if cap is None or taken[prompt_id] < cap:
            taken[prompt_id] += 1
            out.append({"prompt_id": prompt_id, "sample_id": sample_id})
    return out


def batch_loss(items: list[TrainItem], policy: LogpFn, cfg: EMFTConfig) -> tuple[torch.Tensor, dict[str, float]]:
    entropies = policy.entropies([it.prompt for it in items], [it.completion for it in items], cfg.temperature)
    per_sample = loss(entropies)
    return per_sample.mean(), {"mean_entropy": per_sample.mean().item()}

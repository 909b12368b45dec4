"""CoIN: contrastive instruction tuning, for robustness to wording (Yan et al. 2024, "Contrastive instruction
tuning"; luka-group/CoIN ContrastiveLlama.py).

Selection: ReST-EM's rule picks the targets (samples with reward 1: the known answer where the prompt has one, else
the majority's; at most `max_per_prompt` per prompt); each kept sample's prompt is paired with a paraphrase, the
same problem in another training wording of its task family (arithmetic's training-only variants; the first
training wording for a prompt already in a variant), carried as the example's `context`. Held-out wordings are never
used. Prompts without one (self-instruct, user files) are trained by cross-entropy alone.
Loss, for a batch of B items, P of them paired:
    CE = token-mean NLL of the completions after their prompts + token-mean NLL after the paraphrases
    h_i, h'_i = the last layer's state at the last token of (prompt_i, y_i) and of (paraphrase_i, y_i)
    C = (CE_rows(S / T) + CE_rows(S^T / T)) / 2,  S_ij = cos(h_i, h'_j), targets i = j  (in-batch negatives)
    L = CE + scale(λ·C), scale(x) = x · min(λ, CE / x) (no gradient through the ratio) when x > CE, else x
(the official code's scale_contrastive_loss: the contrastive term never exceeds the cross-entropy).
Where we depart: the paper orders its data so that row i+1 is a hard negative and does not shuffle; the loop's
batches are shuffled and a batch's other paraphrases are the negatives. The policy keeps training (no restart).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from sqlalchemy.orm import Session

from selfloop.algorithms.coin_config import CoINConfig
from selfloop.algorithms.items import LogpFn, TrainItem
from selfloop.algorithms.rest import kept_samples
from selfloop.algorithms.spec import chosen_options
from selfloop.db import judging
from selfloop.families.paraphrase import paraphrases

if TYPE_CHECKING:
    from selfloop.config import Config


def select(session: Session, iteration_id: int, config: Config) -> list[dict]:
    cfg = chosen_options(config, CoINConfig)
    out = kept_samples(session, iteration_id, cfg.reward, cfg.max_per_prompt)
    prompts = list(judging.prompts(session, list(dict.fromkeys(r["prompt_id"] for r in out))).values())
    other = paraphrases([(p.id, p.family, p.task_key, p.text) for p in prompts], config.generation.tasks.levels)
    return [{**r, "context": other[r["prompt_id"]]} if r["prompt_id"] in other else r for r in out]


def info_nce(h: torch.Tensor, h_para: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE over cosine similarities: row i's positive is column i, the other columns its negatives."""
    sim = F.cosine_similarity(h.unsqueeze(1), h_para.unsqueeze(0), dim=-1) / temperature
    targets = torch.arange(h.size(0), device=h.device)
    return (F.cross_entropy(sim, targets) + F.cross_entropy(sim.T, targets)) / 2


def scaled(contrastive: torch.Tensor, generation: torch.Tensor, weight: float) -> torch.Tensor:
    """λ·C, scaled down to the cross-entropy's size where it is larger (CoIN's scale_contrastive_loss)."""
    x = contrastive * weight
    if x.item() != 0 and x.item() > generation.item():
        return x * min(weight, (generation.detach() / x.detach()).item())
    return x


def batch_loss(items: list[TrainItem], policy: LogpFn, cfg: CoINConfig) -> tuple[torch.Tensor, dict[str, float]]:
    completions = [it.completion for it in items]
    paired = [i for i, it in enumerate(items) if "context" in it.prompts]  # the paraphrase (CoINData.context), tokenised
    logps, hidden = policy.with_hidden([it.prompt for it in items], completions)
    ce = -torch.cat(logps).mean()
    metrics = {"ce": ce.item(), "ce_paraphrase": 0.0, "info_nce": 0.0, "contrastive": 0.0, "paired": float(len(paired))}
    if not paired:
        return ce, metrics
    para_logps, para_hidden = policy.with_hidden([items[i].prompts["context"] for i in paired], [completions[i] for i in paired])
    generation = ce - torch.cat(para_logps).mean()
    c = info_nce(hidden[paired], para_hidden, cfg.temperature)
    contrastive = scaled(c, generation, cfg.contrastive_weight)
    metrics |= {"ce_paraphrase": (generation - ce).item(), "info_nce": c.item(), "contrastive": contrastive.item()}
    return generation + contrastive, metrics

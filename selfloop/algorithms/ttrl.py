"""TTRL: test-time reinforcement learning with majority-vote rewards (Zuo et al. 2025).

Selection: per prompt, the judge phase's majority answer (over its first judge.vote.voters samples,
by default all) is the pseudo-label; each of the first n_train samples gets reward 1 if its answer
agrees, else 0 (an unparsable answer gets 0) - the vote judgments' own scores, so training and the
calibration metrics use one label. GRPO advantages normalise rewards within the prompt's group. A group whose rewards are all
equal has advantage 0 everywhere; it is skipped (no policy gradient) unless kl_coef > 0.

Loss (PPO's clipped objective with GRPO advantages):
    ratio = exp(logps - old_logps)
    L = -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)  [+ kl_coef * KL(pi || ref)]
Where we depart from a sequence-level reading: the training loop applies it per token (old
log-probs per token from the iteration's starting policy, the sample's advantage on each of its
tokens), averages over a sample's tokens, then over samples - GRPO's form; a sequence-level ratio
exp(sum of token differences) explodes for long completions. The KL term is the k3 estimator
exp(ref - logp) - (ref - logp) - 1, with the starting policy as reference (it is also the sampler).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import torch
from sqlalchemy.orm import Session

from selfloop.algorithms.items import LogpFn, TrainItem, known
from selfloop.algorithms.spec import chosen_options
from selfloop.algorithms.ttrl_config import TTRLConfig
from selfloop.db.models import Judgment, Sample
from selfloop.db.queries import voted_samples

if TYPE_CHECKING:
    from selfloop.config import Config



def advantages(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """GRPO advantage: (r - mean of its group) / (std of its group + 1e-6); 0 where a group's rewards are equal.

    The std is the population standard deviation (divide by n) of the group's rewards.
    """
    out = torch.zeros_like(rewards, dtype=torch.float32)
    for g in torch.unique(group_ids):
        members = group_ids == g
        r = rewards[members].float()
        if torch.all(r == r[0]):
            continue
        out[members] = (r - r.mean()) / (r.std(unbiased=False) + 1e-6)
    return out


def loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    clip_eps: float = 0.2,
    ref_logps: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> torch.Tensor:
    """Per-element clipped policy-gradient loss (elements: tokens in training, or whole sequences)."""
    ratio = torch.exp(logps - old_logps.detach())
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    out = -torch.minimum(unclipped, clipped)
    if kl_coef and ref_logps is not None:
        delta = ref_logps.detach() - logps
        out = out + kl_coef * (torch.exp(delta) - delta - 1.0)
    return out


def select(session: Session, iteration_id: int, config: Config) -> list[dict]:
    """Reward 1 for a sample that agrees with its prompt's majority label, 0 otherwise. The label and the
    agreement are the judge phase's (its vote judgments), so TTRL trains on the very label that
    `judge.reward_accuracy` and `judge.label_accuracy` measure."""
    cfg = chosen_options(config, TTRLConfig)
    rows = voted_samples(session, iteration_id, Sample.prompt_id, Sample.id, Sample.sample_index, Judgment.trained_score)
    groups: dict[int, list] = defaultdict(list)
    for row in rows:
        if row.trained_score is not None:  # no reward (a transformed reward without a value): not trained on
            groups[row.prompt_id].append(row)
    out = []
    for prompt_id, samples in groups.items():
        trained = samples[: cfg.n_train]
        rewards = torch.tensor([float(s.trained_score) for s in trained])
        if torch.all(rewards == rewards[0]) and cfg.kl_coef == 0:
            continue  # advantage 0 for every member: nothing to learn from this group
        adv = advantages(rewards, torch.zeros(len(trained), dtype=torch.long))
        out += [{"prompt_id": prompt_id, "sample_id": s.id, "reward": float(r), "weight": float(a)}
                for s, r, a in zip(trained, rewards, adv)]
    return out


def batch_loss(items: list[TrainItem], policy: LogpFn, cfg: TTRLConfig) -> tuple[torch.Tensor, dict[str, float]]:
    token_logps = policy([it.prompt for it in items], [it.completion for it in items])
    per_sample = []
    clipped = kl = 0.0
    for it, lp in zip(items, token_logps):
        old = torch.tensor(it.ref_token_logps, dtype=lp.dtype, device=lp.device)
        adv = torch.full_like(lp, float(known(it.weight, "advantage")))
        per_sample.append(loss(lp, old, adv, cfg.clip_eps, ref_logps=old, kl_coef=cfg.kl_coef).mean())
        with torch.no_grad():
            clipped += ((lp - old).exp().sub(1).abs() > cfg.clip_eps).float().mean().item()
            delta = old - lp
            kl += (torch.exp(delta) - delta - 1.0).mean().item()  # k3, per token, to the rollout policy (the reference)
    return torch.stack(per_sample).mean(), {"clip_fraction": clipped / len(items), "kl": kl / len(items),
                                            "mean_reward": sum(known(it.reward, "reward") for it in items) / len(items)}

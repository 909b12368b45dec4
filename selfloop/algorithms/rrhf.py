"""RRHF: rank responses to align language models with human feedback (Yuan et al. 2023; GanjinZero/RRHF train.py).

Selection: per prompt, every sample with a valid LLM-judge score, ranked by its mean score (highest first; ties in
sample order). A prompt with fewer than two such samples, or whose best and worst differ by no more than
`min_score_gap` (all tied: nothing to rank), is dropped. The candidates are stored as a ranked example.

Loss, per prompt with candidates y_1..y_K, judge scores r_i and length-normalised log-probabilities
    p_i = sum_t log pi(y_i,t | x, y_i,<t) / |y_i| ** length_penalty      (the end-of-turn token counted)
    L_rank = sum over pairs with r_i > r_j of max(0, p_j - p_i)            (summed, not averaged, as the code does)
    L_sft  = -(1/|y_b|) sum_t log pi(y_b,t | ...),  b = the best-scored candidate
    L = weight * L_rank + L_sft,     no reference model; averaged over the batch's prompts.
Where we depart from the official code: its SFT term is the best row's token log-probs averaged over the padded
length of the batch and indexes one row of a flattened batch (right only at one prompt per device); here it is
computed per prompt over the candidate's own tokens. weight defaults to 1 (the paper, train.sh), not the code's 100.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from sqlalchemy.orm import Session

from selfloop.algorithms.items import LogpFn, TrainItem, known
from selfloop.algorithms.rrhf_config import RRHFConfig
from selfloop.algorithms.spec import chosen_options
from selfloop.db.queries import judged_means

if TYPE_CHECKING:
    from selfloop.config import Config


def rank_loss(scores: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """Sum over pairs (i, j) with rewards[i] > rewards[j] of max(0, scores[j] - scores[i])."""
    better = rewards.unsqueeze(1) > rewards.unsqueeze(0)  # [i, j]: candidate i is judged better than j
    gaps = torch.relu(scores.unsqueeze(0) - scores.unsqueeze(1))  # [i, j]: p_j - p_i where positive
    return (gaps * better).sum()


def loss(token_logps: list[torch.Tensor], rewards: torch.Tensor, weight: float = 1.0,
         length_penalty: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One prompt's RRHF loss from its candidates' per-token log-probs: (total, ranking term, SFT term)."""
    scores = torch.stack([t.sum() / max(1, t.numel()) ** length_penalty for t in token_logps])
    ranking = rank_loss(scores, rewards)
    best = int(torch.argmax(rewards))  # the first of the highest, as torch.argmax
    sft = -token_logps[best].sum() / max(1, token_logps[best].numel())
    return weight * ranking + sft, ranking, sft


def ranked_candidates(session: Session, iteration_id: int, min_gap: float) -> dict[int, list[tuple[int, float]]]:
    """Prompt id -> [(sample id, mean judge score)], best first, for prompts worth ranking."""
    out = {}
    for prompt_id, means in judged_means(session, iteration_id).items():  # samples in sample order
        if len(means) < 2 or max(m for _, m in means) - min(m for _, m in means) <= min_gap:
            continue
        out[prompt_id] = sorted(means, key=lambda m: -m[1])  # stable: ties keep sample order
    return out


def select(session: Session, iteration_id: int, config: Config) -> list[dict]:
    return [{"prompt_id": prompt_id, "reward": ranked[0][1] - ranked[-1][1],
             "candidates": [{"sample_id": s, "score": score} for s, score in ranked]}
            for prompt_id, ranked in ranked_candidates(session, iteration_id,
                                                       chosen_options(config, RRHFConfig).min_score_gap).items()]


def batch_loss(items: list[TrainItem], policy: LogpFn, cfg: RRHFConfig) -> tuple[torch.Tensor, dict[str, float]]:
    prompts = [it.prompt for it in items for _ in known(it.candidates, "candidates")]
    completions = [c for it in items for c in known(it.candidates, "candidates")]
    token_logps = policy(prompts, completions)  # one call for every candidate of the batch
    totals, rankings, sfts, right, pairs, start = [], [], [], 0, 0, 0
    for it in items:
        k = len(known(it.candidates, "candidates"))
        mine = token_logps[start : start + k]
        start += k
        rewards = torch.tensor([float(known(s, "candidate score")) for s in known(it.candidate_scores, "candidate scores")],
                               device=mine[0].device)
        total, ranking, sft = loss(mine, rewards, cfg.weight, cfg.length_penalty)
        totals.append(total)
        rankings.append(ranking.detach())
        sfts.append(sft.detach())
        with torch.no_grad():
            scores = torch.stack([t.sum() / max(1, t.numel()) ** cfg.length_penalty for t in mine])
            better = rewards.unsqueeze(1) > rewards.unsqueeze(0)
            right += int((better & (scores.unsqueeze(1) > scores.unsqueeze(0))).sum())
            pairs += int(better.sum())
    metrics = {"rank_loss": torch.stack(rankings).mean().item(), "sft_loss": torch.stack(sfts).mean().item()}
    if pairs:
        metrics["ranking_accuracy"] = right / pairs
    return torch.stack(totals).mean(), metrics

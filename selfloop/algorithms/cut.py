"""CUT: contrastive unlikelihood training from judgments (Xu et al. 2024, "Reasons to Reject? Aligning language
models with judgments"; wwxu21/CUT modeling_llama_unlikelihood.py, finetune_unlikelihood.py).

Selection: each sample's mean LLM-judge score (parsed judgments). At or above `positive_from` it is a positive; below
it a negative, whose judgment j is the self-judge's own written justification of its lowest score (its verdict line
removed; a negative without one is skipped). Positives are kept at most `positive_ratio` per negative, a seeded draw
(loop seed, iteration) in sample order. A negative's example carries the judged prompt (`template` with the
instruction x and j) as its `context`.
Loss, over a batch's tokens (token means, as the official code's NLLLoss):
    A = -mean_t log p(y_t | x, j) over the negatives' tokens and -log p(y_t | x) over the positives'
    a negative's token t is flagged when p(y_t | x, j) / p(y_t | x) > threshold (no gradient through the ratio)
    B = mean over the negatives' tokens of  -alpha * log(1 - p(y_t | x))  if flagged,  -log p(y_t | x)  otherwise
    L = (A + B) / 2 when the batch has a negative, else A
(1 - p = 0 becomes 1e-5, as the official code does.) The seed note's odds-ratio formula is ORPO's: not this.
Where we depart: the judgments come from the policy judging itself (the paper's online iterations use GPT-4's or
its model's judgments of the policy's samples); the 5-point rubric's 3.5 stands for the paper's 7 of 10.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from typing import TYPE_CHECKING

import torch
from sqlalchemy.orm import Session

from selfloop.algorithms.cut_config import CUTConfig
from selfloop.algorithms.items import LogpFn, TrainItem
from selfloop.algorithms.spec import chosen_options
from selfloop.db import selection

if TYPE_CHECKING:
    from selfloop.config import Config

_VERDICT = re.compile(r"\s*score\s*:\s*(?:\d+(?:\.\d+)?\s*(?:/\s*5)?\s*\.?)?\s*$", re.IGNORECASE)


def justification(raw: str | None) -> str | None:
    """The judge's text without its final verdict ('Score: 2'); None when nothing is left."""
    text = _VERDICT.sub("", (raw or "").strip()).strip()
    return text or None


def keep_positives(positives: list, negatives: int, ratio: float, rng: random.Random) -> list:
    """At most int(negatives * ratio) positives, drawn without replacement, in their order."""
    n = int(negatives * ratio)
    if n >= len(positives):
        return positives
    kept = set(rng.sample(range(len(positives)), n))
    return [p for i, p in enumerate(positives) if i in kept]


def select(session: Session, iteration_id: int, config: Config) -> list[dict]:
    cfg = chosen_options(config, CUTConfig)
    rows = selection.judged_verdicts(session, iteration_id)
    judged: dict[int, dict] = {}
    for prompt_id, sample_id, prompt, score, raw in rows:
        s = judged.setdefault(sample_id, {"prompt_id": prompt_id, "prompt": prompt, "scores": [], "lowest": None})
        s["scores"].append(score)
        if s["lowest"] is None or score < s["lowest"][0]:
            s["lowest"] = (score, raw)
    negatives, positives = [], []
    for sample_id, s in judged.items():
        mean = sum(s["scores"]) / len(s["scores"])
        row = {"prompt_id": s["prompt_id"], "sample_id": sample_id, "reward": mean}
        if mean >= cfg.positive_from:
            positives.append(row)
        elif (reason := justification(s["lowest"][1])) is not None:
            negatives.append({**row, "context": cfg.template.format(instruction=s["prompt"], judgment=reason)})
    number = selection.iteration_number(session, iteration_id)
    key = f"{config.loop.seed}:cut:{number}".encode()
    rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
    return negatives + keep_positives(positives, len(negatives), cfg.positive_ratio, rng)


def loss(judged: list[torch.Tensor], plain: list[torch.Tensor], negative: list[bool], threshold: float,
         alpha: float) -> tuple[torch.Tensor, dict[str, float]]:
    """CUT's loss from per-token log-probs: `judged[i]` of completion i after its judged prompt (a negative) or its
    plain prompt (a positive), `plain[k]` of the k-th negative's completion after its plain prompt."""
    a = -torch.cat(judged).mean()
    if not plain:
        return a, {"ce": a.item(), "unlikelihood": 0.0, "flagged_share": 0.0}
    with_judgment = [lp.detach() for lp, neg in zip(judged, negative) if neg]
    terms, flagged = [], 0
    for lp_j, lp in zip(with_judgment, plain):
        flag = (lp_j - lp.detach()) > math.log(threshold)
        rest = 1 - lp.exp()
        rest = torch.where(rest == 0, rest + 1e-5, rest)
        terms.append(torch.where(flag, -alpha * torch.log(rest), -lp))
        flagged += int(flag.sum())
    tokens = torch.cat(terms)
    b = tokens.mean()
    return (a + b) / 2, {"ce": a.item(), "unlikelihood": b.item(), "flagged_share": flagged / max(1, tokens.numel())}


def batch_loss(items: list[TrainItem], policy: LogpFn, cfg: CUTConfig) -> tuple[torch.Tensor, dict[str, float]]:
    negative = ["context" in it.prompts for it in items]  # a negative's judged prompt (CUTData.context), tokenised
    judged = policy([it.prompts.get("context", it.prompt) for it in items], [it.completion for it in items])
    negatives = [it for it in items if "context" in it.prompts]
    plain = policy([it.prompt for it in negatives], [it.completion for it in negatives]) if negatives else []
    value, metrics = loss(judged, plain, negative, cfg.threshold, cfg.alpha)
    return value, {**metrics, "negatives": float(len(negatives))}

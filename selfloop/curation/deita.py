"""DEITA's score-first, diversity-aware selection (Liu et al. 2024; hkust-nlp/deita `selection/scorer/base.py`,
`selection/filter/base.py`, `combined_filter.py`).

- Complexity of a prompt and quality of each of its first `samples` answers: the expected score over 1..6 under
  the policy's next-token distribution after "Complexity:" / "Quality:", the six values' probabilities
  renormalised (DEITA's softmax over the six logits). DEITA scores with its own fine-tuned scorers and raw
  prompts; here the policy scores itself, its instruction in a user turn whose answer starts with the label
  (prompts/deita_complexity.txt, deita_quality.txt state the scale, which a scorer not trained on it needs).
- Score: complexity x quality (the mean quality over the scored answers: DEITA has one answer per instruction).
- In descending score order, a prompt is kept only if its cosine similarity to every prompt kept so far is at
  most `threshold` (DEITA's tau, 0.9), until `keep` are kept. The embedding is the last layer's hidden state at
  the prompt's last token. distilabel's `DeitaFiltering` keeps rows whose nearest neighbour over the whole pool
  is far enough, which is a different rule; this follows DEITA's greedy pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING

import torch

from selfloop.curation.pool import Candidate, FilterContext, Verdicts
from selfloop.judging.scores import value_tokens

if TYPE_CHECKING:
    from selfloop.curation.deita_config import DeitaOptions

VALUES = (1, 2, 3, 4, 5, 6)


@cache
def template(name: str) -> str:
    return (files("selfloop.prompts") / f"deita_{name}.txt").read_text()


def expected_value(logprobs: Sequence[float], values: Sequence[int] = VALUES) -> float:
    """sum_i v_i p_i with p the softmax of the values' log-probabilities (renormalised over the values alone)."""
    probs = torch.softmax(torch.tensor(list(logprobs), dtype=torch.float64), dim=0)
    return float((probs * torch.tensor(list(values), dtype=torch.float64)).sum())


def greedy_diverse(order: Sequence[int], embeddings: torch.Tensor, threshold: float, keep: int | None
                   ) -> tuple[list[int], dict[int, tuple[str, float | None, int | None]]]:
    """DEITA's pass over rows `order` (best first): (kept rows, row -> (why dropped, its largest similarity to a
    kept row, that row)). The first row is always kept."""
    unit = torch.nn.functional.normalize(embeddings.double(), dim=1)
    kept: list[int] = []
    dropped: dict[int, tuple[str, float | None, int | None]] = {}
    for row in order:
        if keep is not None and len(kept) >= keep:
            dropped[row] = ("full", None, None)
            continue
        if kept:
            sims = unit[kept] @ unit[row]
            best = int(torch.argmax(sims))
            if float(sims[best]) > threshold:
                dropped[row] = ("similar", float(sims[best]), kept[best])
                continue
        kept.append(row)
    return kept, dropped


def _expected_scores(ctx: FilterContext, label: str, texts: list[str]) -> list[float]:
    found = value_tokens(ctx.engine.tokenizer, label, VALUES)
    if found is None:
        raise ValueError(f"curate deita: this tokenizer has no single token per value 1..6 after {label!r}")
    head, ids = found
    rows = ctx.engine.next_token_logprobs([ctx.chat(t) for t in texts], [head] * len(texts), ids, adapter=ctx.adapter)
    return [expected_value(lps) for lps in rows]


def curate(pool: list[Candidate], options: DeitaOptions, ctx: FilterContext) -> Verdicts:
    complexity = _expected_scores(ctx, "Complexity:", [template("complexity").format(instruction=c.text) for c in pool])
    answered = [(c, s) for c in pool for s in c.samples[: options.samples]]
    quality = _expected_scores(ctx, "Quality:", [template("quality").format(instruction=c.text, output=s.text)
                                                 for c, s in answered])
    out = Verdicts(kept=[])
    per_prompt: dict[int, list[float]] = {c.prompt_id: [] for c in pool}
    for (c, s), q in zip(answered, quality, strict=True):
        out.sample_score(c.prompt_id, s.id, q)
        per_prompt[c.prompt_id].append(q)
    quality_of = {p: sum(v) / len(v) if v else 1.0 for p, v in per_prompt.items()}  # no answer: the lowest quality
    score = [cx * quality_of[c.prompt_id] for c, cx in zip(pool, complexity, strict=True)]
    order = sorted(range(len(pool)), key=lambda i: -score[i])  # stable: prompt order among equals
    kept, dropped = greedy_diverse(order, torch.tensor(ctx.embed(pool)), options.threshold, options.keep)
    for rank, i in enumerate(order, 1):
        c = pool[i]
        what = f"complexity {complexity[i]:.2f} x quality {quality_of[c.prompt_id]:.2f} = {score[i]:.2f}, rank {rank}"
        if i not in dropped:
            out.decide(c.prompt_id, score[i], True, what)
            continue
        why, sim, other = dropped[i]
        reason = (f"{what}: cosine similarity {sim:.3f} > {options.threshold} to kept prompt {pool[other].prompt_id}"
                  if why == "similar" and other is not None else f"{what}: beyond curate.deita.keep ({options.keep})")
        out.decide(c.prompt_id, score[i], False, reason)
    out.kept = [pool[i].prompt_id for i in kept]
    return out

"""MoDS's coverage and necessity (Du et al. 2023; CASIA-LM/MoDS `diverse-data-selection/kcenter_greedy.py`,
`necessity-evaluation/`).

- Coverage: k-center greedy (Sener and Savarese 2018) over the prompts' embeddings with Euclidean distance:
  each next centre is the prompt farthest from its nearest centre so far. MoDS draws the first centre with
  numpy's unseeded random choice; here the draw is seeded by the loop's seed and the iteration, so a re-run picks
  the same centres. The embedding is the last layer's hidden state at the prompt's last token (MoDS: BERT's).
- Necessity: MoDS trains a model on the seed set, answers the rest and keeps what its reward model scores low;
  here the policy's own answers are there already, so the prompts whose samples' mean LLM-judge score is below
  `necessity_below` are kept besides the centres. MoDS's first step (a quality filter by a reward model) is left
  to the other filters.
Kept order: the centres in the order chosen, then the necessary prompts in prompt order.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import torch

from selfloop.curation.pool import Candidate, FilterContext, Verdicts

if TYPE_CHECKING:
    from selfloop.curation.mods_config import ModsOptions


def kcenter_greedy(points: torch.Tensor, k: int, first: int) -> tuple[list[int], list[float | None]]:
    """(the k centres' rows in the order chosen, each one's distance to its nearest earlier centre when chosen,
    None for the first)."""
    points = points.double()
    centres: list[int] = [first]
    gaps: list[float | None] = [None]
    nearest = torch.cdist(points, points[first : first + 1]).squeeze(1)
    while len(centres) < min(k, len(points)):
        row = int(torch.argmax(nearest))
        centres.append(row)
        gaps.append(float(nearest[row]))
        nearest = torch.minimum(nearest, torch.cdist(points, points[row : row + 1]).squeeze(1))
    return centres, gaps


def curate(pool: list[Candidate], options: ModsOptions, ctx: FilterContext) -> Verdicts:
    points = torch.tensor(ctx.embed(pool), dtype=torch.float64)
    first = random.Random(ctx.seed).randrange(len(pool))
    centres, gaps = kcenter_greedy(points, options.centers, first)
    chosen = dict(zip(centres, gaps, strict=True))
    nearest = torch.cdist(points, points[centres]).min(dim=1).values
    out = Verdicts(kept=[])
    threshold = options.necessity_below
    necessary = []
    for i, c in enumerate(pool):
        low = threshold is not None and c.judge_mean is not None and c.judge_mean < threshold
        if i in chosen:
            gap = chosen[i]
            out.decide(c.prompt_id, gap, True, f"k-center {centres.index(i) + 1} of {len(centres)} (coverage)"
                       + ("" if gap is None else f", {gap:.3f} from the centres before it"))
        elif low:
            necessary.append(c.prompt_id)
            out.decide(c.prompt_id, c.judge_mean, True, f"necessity: its answers' mean judge score {c.judge_mean:.2f} "
                       f"is below {threshold}")
        else:
            judged = "not judged" if c.judge_mean is None else f"judge score {c.judge_mean:.2f}"
            out.decide(c.prompt_id, float(nearest[i]), False, f"not a centre ({float(nearest[i]):.3f} from the nearest "
                       f"of {len(centres)}) and not necessary ({judged}"
                       + ("" if threshold is None else f", not below {threshold}") + ")")
    out.kept = [pool[i].prompt_id for i in centres] + necessary
    return out

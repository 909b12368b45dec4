"""IFD, the instruction-following difficulty of Cherry LLM (Li et al. 2024; MingLiiii/Cherry_LLM,
`cherry_seletion/data_analysis.py` and `data_by_IFD.py`).

    IFD(Q, A) = mean CE of A's tokens after Q  /  mean CE of the same tokens after no question

A ratio of mean losses (Cherry's `mean_rate = mean_2 / mean_1` over the token losses), not of perplexities,
which would rank differently. The "no question" context is the chat template with an empty user turn, as
Cherry's is its response header ('### Response:') alone; both contexts are followed by the very token ids the
policy sampled. A prompt's IFD is the mean over its first `samples` samples (Cherry scores one answer per
instruction; a loop has several). IFD > 1 is dropped: the answer is likelier without the question. The rest are
ranked by IFD, highest first, and the top `keep_fraction` kept (at least one). Scored by the iteration's policy,
as Cherry scores with its briefly trained model.

data-juicer's IFD filter with its documented range keeps the rows Cherry drops; this module does not follow it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from selfloop.curation.pool import Candidate, FilterContext, Verdicts

if TYPE_CHECKING:
    from selfloop.curation.ifd_config import IFDOptions


def ifd_ratio(conditioned: Sequence[float], alone: Sequence[float]) -> float | None:
    """Mean CE after the question over mean CE after no question, from each token's log-probability under the
    two contexts (None: no token, or an answer the empty context predicts perfectly)."""
    if not conditioned or not alone:
        return None
    ce_conditioned = -sum(conditioned) / len(conditioned)
    ce_alone = -sum(alone) / len(alone)
    return ce_conditioned / ce_alone if ce_alone > 0 else None


def curate(pool: list[Candidate], options: IFDOptions, ctx: FilterContext) -> Verdicts:
    scored = [(c, s) for c in pool for s in c.samples[: options.samples] if s.token_ids]
    tokens = [s.token_ids for _, s in scored]
    conditioned = ctx.engine.score([ctx.chat(c.text) for c, _ in scored], tokens, adapter=ctx.adapter)
    alone = ctx.engine.score([ctx.chat("")] * len(scored), tokens, adapter=ctx.adapter)
    out = Verdicts(kept=[])
    ratios: dict[int, list[float]] = {c.prompt_id: [] for c in pool}
    for (c, s), lp_q, lp_0 in zip(scored, conditioned, alone, strict=True):
        ratio = ifd_ratio(lp_q, lp_0)
        out.sample_score(c.prompt_id, s.id, ratio)
        if ratio is not None:
            ratios[c.prompt_id].append(ratio)
    ifd = {p: sum(v) / len(v) for p, v in ratios.items() if v}
    eligible = []
    for c in pool:
        value = ifd.get(c.prompt_id)
        if value is None:
            out.decide(c.prompt_id, None, False, "no sample to score (empty answers)")
        elif options.drop_above_one and value > 1.0:
            out.decide(c.prompt_id, value, False, f"IFD {value:.4f} > 1: the answer is likelier without the question")
        else:
            eligible.append(c.prompt_id)
    ranked = sorted(eligible, key=lambda p: -ifd[p])  # stable: prompt order among equals
    n_keep = max(1, int(len(ranked) * options.keep_fraction)) if ranked else 0
    cut = ifd[ranked[n_keep - 1]] if ranked else None
    for rank, p in enumerate(ranked, 1):
        if rank <= n_keep:
            out.decide(p, ifd[p], True, f"IFD {ifd[p]:.4f}, rank {rank} of {len(ranked)} (top {options.keep_fraction:.0%} kept)")
        else:
            out.decide(p, ifd[p], False, f"IFD {ifd[p]:.4f}, rank {rank} of {len(ranked)}: below the kept top "
                       f"{options.keep_fraction:.0%} (cut at {cut:.4f})")
    out.kept = ranked[:n_keep]
    return out

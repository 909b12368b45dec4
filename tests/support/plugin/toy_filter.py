"""The toy filter's code: each prompt's score is its samples' mean length in tokens; the `keep` shortest are kept,
shortest first."""

from toy_filter_config import ShortestOptions

from selfloop.curation.pool import Candidate, FilterContext, Verdicts


def curate(pool: list[Candidate], options: ShortestOptions, ctx: FilterContext) -> Verdicts:
    scores = {c.prompt_id: sum(len(s.token_ids) for s in c.samples) / max(1, len(c.samples)) for c in pool}
    order = sorted(pool, key=lambda c: (scores[c.prompt_id], c.prompt_id))
    out = Verdicts(kept=[c.prompt_id for c in order[: options.keep]])
    for rank, c in enumerate(order, 1):
        for s in c.samples:
            out.sample_score(c.prompt_id, s.id, float(len(s.token_ids)))
        out.decide(c.prompt_id, scores[c.prompt_id], rank <= options.keep, f"rank {rank} by mean sample length")
    return out

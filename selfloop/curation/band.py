"""A difficulty band on the vote share (TTRL and label-free RL practice; arXiv 2511.04902 masks groups without a
clear majority): a prompt whose samples all agree teaches nothing (every reward equal), one without a majority
has a label that is noise. Kept: above < share < below, both bounds moved by `shift` each iteration after the
first (a curriculum) and kept within 0..1. The order is left as it was (the band ranks nothing)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from selfloop.curation.pool import Candidate, FilterContext, Verdicts

if TYPE_CHECKING:
    from selfloop.curation.band_config import BandOptions


def bounds(options: BandOptions, number: int) -> tuple[float, float]:
    moved = options.shift * (number - 1)
    return min(1.0, max(0.0, options.above + moved)), min(1.0, max(0.0, options.below + moved))


def curate(pool: list[Candidate], options: BandOptions, ctx: FilterContext) -> Verdicts:
    low, high = bounds(options, ctx.number)
    out = Verdicts(kept=[])
    for c in pool:
        share = c.vote_share
        if share is None:
            out.decide(c.prompt_id, None, False, "no vote (no sample gave an answer)")
        elif share <= low:
            out.decide(c.prompt_id, share, False, f"vote share {share:.2f} is not above {low:.2f}: no clear majority, "
                       "the label is noise")
        elif share >= high:
            out.decide(c.prompt_id, share, False, f"vote share {share:.2f} is not below {high:.2f}: "
                       + ("every sample agrees, nothing to learn" if share >= 1.0 else "too easy for the band"))
        else:
            out.kept.append(c.prompt_id)
            out.decide(c.prompt_id, share, True, f"vote share {share:.2f} inside the band ({low:.2f}, {high:.2f})")
    return out

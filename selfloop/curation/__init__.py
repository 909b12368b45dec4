"""Data selection: the curate phase's filters (IFD, DEITA, MoDS, the vote-share band) and the budget.

Each filter module has `curate(pool, options, ctx) -> Verdicts`: it scores the prompts the filters before it kept
and returns the ones it keeps, in its own rank order, with one row per prompt (score, kept, reason) and, where its
score is made of per-sample scores, one row per sample. `selfloop.phases.curate` runs them in the order of
`curate.filters` and stores every row.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from selfloop.curation.pool import Candidate, FilterContext, Verdicts

# Filter name -> its module under selfloop.curation (imported on first use: torch stays out of a config load).
FILTERS = {"ifd": "ifd", "deita": "deita", "mods": "mods", "band": "band"}


def curate_fn(name: str) -> Callable[[list[Candidate], object, FilterContext], Verdicts]:
    return import_module(f"selfloop.curation.{FILTERS[name]}").curate

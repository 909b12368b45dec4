"""Data selection: the curate phase's filters (IFD, DEITA, MoDS, the vote-share band, and any a plug-in adds) and
the budget.

Each filter is declared by a FilterSpec beside its options (`<name>_config.py`, torch-free) and computed by a module
with `curate(pool, options, ctx) -> Verdicts`: it scores the prompts the filters before it kept and returns the ones
it keeps, in its own rank order, with one row per prompt (score, kept, reason) and, where its score is made of
per-sample scores, one row per sample. `selfloop.phases.curate` runs them in the order of `curate.filters` and
stores every row. A package adds a filter by naming its FilterSpec in the `selfloop.filters` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING

from selfloop.curation.spec import FilterSpec
from selfloop.plugins import with_entry_points

if TYPE_CHECKING:  # the filters' working types import the engines, which import the config: not at config load
    from selfloop.curation.pool import Candidate, FilterContext, Verdicts

ENTRY_POINT_GROUP = "selfloop.filters"
BUILTIN = ("ifd", "deita", "mods", "band")


@cache
def specs() -> dict[str, FilterSpec]:
    """Every filter: the built-in ones, then those of installed plug-ins."""
    builtin = {name: import_module(f"selfloop.curation.{name}_config").SPEC for name in BUILTIN}
    return with_entry_points(ENTRY_POINT_GROUP, FilterSpec, builtin)


def curate_fn(name: str) -> Callable[[list[Candidate], object, FilterContext], Verdicts]:
    return import_module(specs()[name].module).curate

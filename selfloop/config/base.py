"""The pieces every section is made of: the Section base, the registries (algorithms, task families,
filters) and the types their names make, bounded sizes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from annotated_types import Interval
from pydantic import BaseModel, ConfigDict, Field

from selfloop.algorithms import specs as algorithm_specs
from selfloop.curation import specs as filter_specs
from selfloop.families import specs as family_specs

Phase = Literal["synthesize", "rollout", "judge", "curate", "select", "train", "evaluate", "promote"]
PHASES: tuple[Phase, ...] = ("synthesize", "rollout", "judge", "curate", "select", "train", "evaluate", "promote")
# The phases a loop runs when loop.phases is not given: curate joins them when curate.filters names a filter.
DEFAULT_PHASES = tuple(p for p in PHASES if p != "curate")
# The registered algorithms (built-in and from installed plug-ins) decide the names and option sections.
ALGORITHMS = algorithm_specs()
# Registered task families (built-in and from plug-ins): those with a generator are kinds of task pools (with a
# training split) and of held-out suites (with an eval split); any family may grade a user file's answers.
FAMILIES = family_specs()
# Registered curate filters (built-in and from plug-ins): the names curate.filters accepts and their sections.
FILTERS = filter_specs()
# The names the registries hold, as Literal types pydantic checks; a type checker, which cannot know what is
# installed, reads them as str.
if TYPE_CHECKING:
    PoolKind: TypeAlias = str
    SuiteKind: TypeAlias = str
    FamilyName: TypeAlias = str
    Algorithm: TypeAlias = str
    CurateFilter: TypeAlias = str
else:
    PoolKind = Literal[("seed", "jsonl", *(n for n, f in FAMILIES.items() if f.problems and "train" in f.splits))]
    SuiteKind = Literal[(*(n for n, f in FAMILIES.items() if f.problems and "eval" in f.splits), "jsonl")]
    FamilyName = Literal[tuple(FAMILIES)]
    Algorithm = Literal[tuple(ALGORITHMS)]
    CurateFilter = Literal[tuple(FILTERS)]

PositiveInt = Annotated[int, Field(ge=1)]


def upto(limit: int, low: int = 1) -> Interval:
    """The bounds of an int from `low` to `limit` (`Annotated[int, Annotated[int, upto(N)]]`): every size in the config is bounded,
    so a typo such as 10**9 samples is refused at validation instead of running until killed or failing on a huge
    allocation."""
    return Interval(ge=low, le=limit)


Probability = Annotated[float, Field(gt=0.0, le=1.0)]


class Section(BaseModel):
    """Base of every section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def default_cache_dir() -> Path:
    env = os.environ.get("SELFLOOP_CACHE_DIR") or os.environ.get("CACHE_DIRECTORY")
    if env:
        return Path(env.split(":")[0]).expanduser().resolve()
    return Path("~/.cache/selfloop").expanduser()


def section_type(ann: Any) -> type[BaseModel] | None:
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None

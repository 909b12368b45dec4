"""The task family registry. A family is one module with a `SPEC` (a `FamilySpec`): its problems per split and
wording, its grader and what its answers are. Built-in ones are listed in `BUILTIN`; a user's package adds its
own through the entry point group `selfloop.families` (`reverse = "mypkg.reverse:SPEC"`). See docs/extending.md."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import import_module

from selfloop.errors import ConfigError
from selfloop.families.spec import FamilySpec, Problem
from selfloop.plugins import with_entry_points

ENTRY_POINT_GROUP = "selfloop.families"
# selfloop.families.<name>.SPEC; 'value' grades the answers of seed tasks and user files
BUILTIN = ("value", "arithmetic", "units", "instructions")


@cache
def specs() -> dict[str, FamilySpec]:
    """Every family this installation knows: the built-ins, then those of installed entry points."""
    return with_entry_points(ENTRY_POINT_GROUP, FamilySpec, {name: import_module(f"selfloop.families.{name}").SPEC for name in BUILTIN})


def generated(name: str, levels: Sequence[int], split: str, phrasing: str) -> list[Problem]:
    """The problems of family `name`'s generator for a split (train or eval) and wording; a family without one (its
    answers come from a user's file) is refused."""
    problems = family(name).problems
    if problems is None:
        raise ConfigError(f"task family {name!r} generates no problems: give a file of its prompts and answers (kind jsonl)")
    return problems(levels, split, phrasing)


def family(name: str) -> FamilySpec:
    """A registered family; a name no installed package defines (a prompt stored by a plug-in since removed)
    is a one-line error."""
    try:
        return specs()[name]
    except KeyError:
        raise LookupError(f"task family {name!r} is not installed (installed: {', '.join(specs())})") from None

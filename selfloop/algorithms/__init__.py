"""The algorithm registry. An algorithm is two modules: `<name>_config.py` (its options and its `SPEC`, an
`AlgorithmSpec`, torch-free) and the trainer module SPEC names (selection and loss). Built-in ones are listed
in `BUILTIN`; a user's package adds its own through the entry point group `selfloop.algorithms`, each entry
naming an `AlgorithmSpec` (`toy = "mypkg.toy_config:SPEC"`). See docs/extending.md.

Trainers (and torch) are imported on first use of `trainer(name)`: reading a config imports only specs."""

from __future__ import annotations

from functools import cache
from importlib import import_module
from types import ModuleType

from selfloop.algorithms.spec import AlgorithmSpec
from selfloop.plugins import with_entry_points

ENTRY_POINT_GROUP = "selfloop.algorithms"
# Built-in algorithms, in the order the docs list them: selfloop.algorithms.<name>_config.SPEC
BUILTIN = ("dpo", "spin", "ttrl", "rlsc", "rest", "orpo", "rrhf", "raft", "rso", "rtuning", "cut", "coin", "emft")
# train.algorithm when a config names none: Self-Rewarding's DPO on the judge's best and worst samples.
DEFAULT = "dpo"


@cache
def specs() -> dict[str, AlgorithmSpec]:
    """Every algorithm this installation knows: the built-ins, then those of installed entry points."""
    builtin = {name: import_module(f"selfloop.algorithms.{name}_config").SPEC for name in BUILTIN}
    return with_entry_points(ENTRY_POINT_GROUP, AlgorithmSpec, builtin)


def spec(name: str) -> AlgorithmSpec:
    return specs()[name]


def trainer(name: str) -> ModuleType:
    """The module with the algorithm's `select` and `batch_loss` (imports torch)."""
    return import_module(specs()[name].trainer)

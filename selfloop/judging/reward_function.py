"""A user's own reward, named in the config (`judge.reward: function`, `judge.reward_function: module:function`),
for users who want a reward in a few lines rather than a task family: called as TRL's reward functions are, with
the prompts, the completions and the known answers as keyword lists, returning one float per completion."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import Any

from selfloop.errors import ConfigError, SelfloopError

RewardFn = Callable[..., Sequence[float]]


def load(path: str) -> RewardFn:
    """The function `module:name` names; ConfigError naming the field when it cannot be imported or called."""
    module_name, _, name = path.partition(":")
    where = f"judge.reward_function {path!r}"
    try:
        module = import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - whatever importing the user's module raises, in one line
        raise ConfigError(f"{where}: cannot import {module_name!r} ({type(exc).__name__}: {exc})") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"{where}: {module_name!r} has no function {name!r}")
    return fn


def rewards(path: str, prompts: list[str], completions: list[str], answers: list[str | None]) -> list[float]:
    """The function's reward of each completion, checked: as many as completions, each a finite number in [0, 1]."""
    fn = load(path)
    try:
        out: Any = fn(prompts=prompts, completions=completions, answers=answers)
    except Exception as exc:  # noqa: BLE001 - the user's code failed: say where, in one line
        raise SelfloopError(f"judge.reward_function {path!r} failed: {type(exc).__name__}: {exc}") from None
    values = list(out) if isinstance(out, Sequence) or hasattr(out, "__iter__") else None
    if values is None or len(values) != len(completions):
        raise SelfloopError(f"judge.reward_function {path!r} returned {len(values) if values is not None else type(out).__name__}"
                            f" value(s) for {len(completions)} completions (one float each)")
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
            raise SelfloopError(f"judge.reward_function {path!r} returned {value!r} for completion {i} (a number "
                                "from 0 to 1 is a reward)")
    return [float(v) for v in values]

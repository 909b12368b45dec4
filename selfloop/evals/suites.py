"""Held-out verifiable suites: what the loop never trains on and measures itself against.

Built-in generators (arithmetic, units, instructions) take their problems from the eval side of a
fixed split, worded as training prompts are ('seen') or in held-out words ('unseen'); a JSONL file
of prompt/answer pairs adds a suite of one's own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from selfloop.config import SuiteConfig
from selfloop.errors import ConfigError
from selfloop.evals import arithmetic, instructions, units
from selfloop.tasks import read_user_tasks


@dataclass(frozen=True)
class Item:
    prompt: str
    answer: str


def load_suite(cfg: SuiteConfig) -> list[Item]:
    if cfg.kind in ("arithmetic", "units", "instructions"):
        if cfg.kind == "arithmetic":
            pool = arithmetic.problems(cfg.levels, "eval", cfg.phrasing)
        elif cfg.kind == "units":
            pool = units.problems("eval", cfg.phrasing)
        else:
            pool = instructions.problems(cfg.levels, "eval", cfg.phrasing)
        # The same draw for either phrasing: the pools list the same problems in the same order.
        chosen = pool if cfg.size >= len(pool) else random.Random(cfg.seed).sample(pool, cfg.size)
        return [Item(p.prompt, p.answer) for p in chosen]
    path = Path(cfg.path).expanduser()  # type: ignore[arg-type]
    tasks = read_user_tasks(path, f"eval.suites[{cfg.name}].path", "eval", cfg.fields, cfg.answer_after)
    missing = [t.key for t in tasks if t.answer is None]
    if missing:
        raise ConfigError(f"{path}: every eval line needs an 'answer' ({missing[0]} has none)")
    return [Item(t.prompt, t.answer) for t in tasks]  # type: ignore[arg-type]

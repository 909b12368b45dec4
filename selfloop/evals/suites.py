"""Held-out verifiable suites: what the loop never trains on and measures itself against.

Built-in generators (arithmetic, units) take their problems from the eval side of a fixed split;
a JSONL file of prompt/answer pairs adds a suite of one's own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from selfloop.config import SuiteConfig
from selfloop.errors import ConfigError
from selfloop.evals import arithmetic, units
from selfloop.tasks import read_jsonl_tasks, read_user_file


@dataclass(frozen=True)
class Item:
    prompt: str
    answer: str


def load_suite(cfg: SuiteConfig) -> list[Item]:
    if cfg.kind == "arithmetic":
        return [Item(p.prompt, p.answer) for p in arithmetic.eval_suite(cfg.levels, cfg.size, cfg.seed)]
    if cfg.kind == "units":
        pool = units.problems("eval")
        chosen = pool if cfg.size >= len(pool) else random.Random(cfg.seed).sample(pool, cfg.size)
        return [Item(p.prompt, p.answer) for p in chosen]
    path = Path(cfg.path).expanduser()  # type: ignore[arg-type]
    tasks = read_jsonl_tasks(read_user_file(path, f"eval.suites[{cfg.name}].path"), str(path), "eval")
    missing = [t.key for t in tasks if t.answer is None]
    if missing:
        raise ConfigError(f"{path}: every eval line needs an 'answer' ({missing[0]} has none)")
    return [Item(t.prompt, t.answer) for t in tasks]  # type: ignore[arg-type]

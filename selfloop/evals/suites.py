"""Held-out verifiable suites: what the loop never trains on and measures itself against.

A task family's suite takes its problems from the eval side of the family's fixed split (all of it, or its fixed
validation or test half: three splits by value), worded as training prompts are ('seen') or in held-out words
('unseen': three splits by wording); a user file of prompt/answer rows adds a suite of one's own,
graded by the family it names (`family`, default 'value').
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from selfloop.config import SuiteConfig
from selfloop.errors import ConfigError
from selfloop.families import generated
from selfloop.families.phrasing import stable_index
from selfloop.tasks import read_user_tasks


@dataclass(frozen=True)
class Item:
    prompt: str  # the (last) user turn
    answer: str
    chat: tuple[dict[str, str], ...] | None = None  # a conversation's turns up to that user turn (a user file's chat rows)


def half(key: str) -> str:
    """'validation' or 'test': the fixed half of a family's held-out split a problem belongs to, by its canonical key
    (`Problem.canonical`) without a level ('arith:1:add:13:28' and 'arith:2:add:13:28' are the same question at two
    levels: one half)."""
    return "test" if stable_index("holdout:" + re.sub(r"^(\w+):\d+:", r"\1:", key), 2) else "validation"


def load_suite(cfg: SuiteConfig) -> list[Item]:
    if cfg.kind != "jsonl":
        pool = generated(cfg.kind, cfg.levels, "eval", cfg.phrasing)
        if cfg.split != "eval":
            pool = [p for p in pool if half(p.canonical) == cfg.split]
        # The same draw for either phrasing: the pools list the same problems in the same order.
        chosen = pool if cfg.size >= len(pool) else random.Random(cfg.seed).sample(pool, cfg.size)
        return [Item(p.prompt, p.answer) for p in chosen]
    if cfg.path is None:
        raise ConfigError(f"eval.suites[{cfg.name}]: kind 'jsonl' needs a path")
    path = Path(cfg.path).expanduser()
    tasks = read_user_tasks(path, f"eval.suites[{cfg.name}].path", "eval", cfg.fields, cfg.answer_after)
    missing = [t.key for t in tasks if t.answer is None]
    if missing and cfg.labelled:
        raise ConfigError(f"{path}: every eval line needs an 'answer' ({missing[0]} has none; a suite of prompts without "
                          "answers is labelled: false)")
    return [Item(t.prompt, t.answer or "", t.chat) for t in tasks]

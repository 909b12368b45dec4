"""Arithmetic problems from a fixed universe per difficulty level, split once into train and eval.

The split is a hash of each problem's canonical key, not a seeded draw: whatever seed a suite or a
task pool uses, an eval problem can never show up as a training prompt. `check_disjoint` verifies it.

Levels: 1: a + b with a, b in 1..30. 2: a + b or a - b with a, b in 10..99 (no negative results).
3: a * b with a, b in 2..12, and one-step word problems.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import cache

NAMES = ["Ana", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo"]
ITEMS = ["apples", "marbles", "books", "stickers", "coins", "shells"]


@dataclass(frozen=True)
class Problem:
    key: str  # canonical, e.g. "arith:1:add:7:12"
    prompt: str
    answer: str
    level: int


def split_of(key: str) -> str:
    """'eval' for about a third of all problems, 'train' for the rest; fixed forever by the key."""
    return "eval" if int(hashlib.sha256(key.encode()).hexdigest(), 16) % 3 == 0 else "train"


@cache
def universe(level: int) -> tuple[Problem, ...]:
    out = []
    if level == 1:
        for a in range(1, 31):
            for b in range(1, 31):
                out.append(Problem(f"arith:1:add:{a}:{b}", f"What is {a} + {b}?", str(a + b), 1))
    elif level == 2:
        for a in range(10, 100):
            for b in range(10, 100, 3):
                out.append(Problem(f"arith:2:add:{a}:{b}", f"What is {a} + {b}?", str(a + b), 2))
                if a >= b:
                    out.append(Problem(f"arith:2:sub:{a}:{b}", f"What is {a} - {b}?", str(a - b), 2))
    elif level == 3:
        for a in range(2, 13):
            for b in range(2, 13):
                out.append(Problem(f"arith:3:mul:{a}:{b}", f"What is {a} * {b}?", str(a * b), 3))
        for i, name in enumerate(NAMES):
            for j, item in enumerate(ITEMS):
                for a in range(5, 25, 4):
                    b = 2 + (i + j + a) % 9
                    out.append(Problem(
                        f"arith:3:word-add:{name}:{item}:{a}:{b}",
                        f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?", str(a + b), 3))
                    out.append(Problem(
                        f"arith:3:word-sub:{name}:{item}:{a}:{b}",
                        f"{name} has {a} {item} and gives {b} away. How many {item} does {name} have left?", str(a - b), 3))
    else:
        raise ValueError(f"no arithmetic level {level}")
    return tuple(out)


def problems(levels: list[int], split: str) -> list[Problem]:
    return [p for level in sorted(set(levels)) for p in universe(level) if split_of(p.key) == split]


def eval_suite(levels: list[int], size: int, seed: int) -> list[Problem]:
    """`size` held-out problems (all of the split if it holds fewer), drawn with `seed`."""
    pool = problems(levels, "eval")
    if size >= len(pool):
        return pool
    return random.Random(seed).sample(pool, size)


def check_disjoint(train_prompts: set[str], eval_prompts: list[str]) -> list[str]:
    """Eval prompts that also occur among training prompts (should be none)."""
    return [p for p in eval_prompts if p in train_prompts]

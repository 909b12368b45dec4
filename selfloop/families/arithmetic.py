"""Arithmetic problems from a fixed universe per difficulty level, split once into train and eval.

The split is a hash of each problem's canonical key, not a seeded draw: whatever seed a suite or a
task pool uses, an eval problem can never show up as a training prompt. `check_disjoint` verifies it.

Levels: 1: a + b with a, b in 1..30. 2: a + b or a - b with a, b in 10..99 (no negative results).
3: a * b with a, b in 2..12, and one-step word problems.

Phrasings: training prompts use one wording per operation ('seen'), or with 'varied' (a task pool
option) that wording and the training-only variants in VARIED, picked per problem by a hash of its key.
The 'unseen' wordings are held out from every training prompt; a suite built with them asks the same
problems (same keys, so the same draw for a given seed) in words the loop never trained on. 'transfer' (level 1,
suites only) asks held-out sums and differences of level 1's numbers in forms no training prompt uses: word problems,
other instructions and notations, and subtraction, reported as transfer.

The split is by a problem's canonical form (`canonical`): 7 + 12, 12 + 7 and a word problem adding 7 and 12 are
one question, on one side of the split.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from selfloop.families.phrasing import pick, stable_index
from selfloop.families.spec import FamilySpec, Problem
from selfloop.families.value import grade_value

NAMES = ["Ana", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo"]
ITEMS = ["apples", "marbles", "books", "stickers", "coins", "shells"]


COMMUTATIVE = {"add": "add", "mul": "mul", "word-add": "add"}
ORDERED = {"sub": "sub", "word-sub": "sub"}


def canonical(key: str) -> str:
    """A problem's canonical form: its operation and operands, whatever the level, the wording or the story around
    them, with the operands of a sum or a product sorted (7 + 12 and 12 + 7 are one question; so is a word problem
    adding the same two numbers)."""
    parts = key.split(":")[1:]
    if parts[0].isdigit():  # a problem's key has its level; a canonical form has none (canonical is idempotent)
        parts = parts[1:]
    op, *rest = parts
    op = op.removesuffix("-transfer")
    a, b = (int(x) for x in rest[-2:])
    if op in COMMUTATIVE:
        return f"arith:{COMMUTATIVE[op]}:{min(a, b)}:{max(a, b)}"
    return f"arith:{ORDERED.get(op, op)}:{a}:{b}"


def split_of(key: str) -> str:
    """'eval' for about a third of all problems, 'train' for the rest; fixed forever by the problem's canonical
    form (`canonical`), so a question held out is held out in every order, level and wording of its operands."""
    return "eval" if stable_index(canonical(key), 3) == 0 else "train"


# Per operation: the training wording first, then the held-out ones.
WORDINGS = {
    "add": ("What is {a} + {b}?", "Calculate the sum of {a} and {b}.", "{a} plus {b} equals what?",
            "Add {a} and {b} together. What do you get?"),
    "sub": ("What is {a} - {b}?", "Subtract {b} from {a}.", "What do you get when you take {b} away from {a}?",
            "{a} minus {b} is how much?"),
    "mul": ("What is {a} * {b}?", "Multiply {a} by {b}.", "What is the product of {a} and {b}?", "{a} times {b} equals what?"),
    "word-add": ("{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?",
                 "{name} started with {a} {item}. Then {name} was given {b} more. How many {item} are there now?",
                 "After getting {b} more {item}, how many {item} does {name} have if {name} started with {a}?"),
    "word-sub": ("{name} has {a} {item} and gives {b} away. How many {item} does {name} have left?",
                 "{name} started with {a} {item} and gave away {b}. How many {item} remain?",
                 "If {name} has {a} {item} and gives {b} of them away, how many are left?"),
}


# Training-only variants of each operation's first wording (symbols kept, so none is a held-out wording).
VARIED = {
    "add": ("Compute {a} + {b}.", "Find {a} + {b}.", "How much is {a} + {b}?", "{a} + {b} = ?"),
    "sub": ("Compute {a} - {b}.", "Find {a} - {b}.", "How much is {a} - {b}?", "{a} - {b} = ?"),
    "mul": ("Compute {a} * {b}.", "Find {a} * {b}.", "How much is {a} * {b}?", "{a} * {b} = ?"),
}


def _wording(op: str, key: str, phrasing: str) -> str:
    if phrasing == "varied":
        training = (WORDINGS[op][0], *VARIED.get(op, ()))
        return pick(training, key, "seen", seen=len(training))
    return pick(WORDINGS[op], key, phrasing)


def _problem(level: int, op: str, answer: int, phrasing: str, name: str = "", item: str = "", **v: int) -> Problem:
    key = f"arith:{level}:{op}:" + (f"{name}:{item}:" if name else "") + f"{v['a']}:{v['b']}"
    return Problem(key, _wording(op, key, phrasing).format(name=name, item=item, **v), str(answer), level,
                   group=canonical(key))


# Transfer: level 1's numbers in forms no training prompt and no held-out wording uses: word problems, other
# instructions and notations, and subtraction (never trained at level 1).
TRANSFER = {
    "add": ("{name} has {a} {item}. A friend gives {name} {b} more. How many {item} does {name} have now?",
            "There are {a} {item} in one box and {b} in another. How many {item} are there altogether?",
            "Work out {a} + {b} and reply with the result.", "Find the total of {a} and {b}.", "{a}+{b}="),
    "sub": ("What is {a} - {b}?", "{name} had {a} {item} and lost {b}. How many {item} are left?",
            "Take {b} from {a}. What remains?"),
}


@cache
def transfer_universe() -> tuple[Problem, ...]:
    """Level 1's sums, and differences of its numbers, each in one transfer form picked by its key."""
    out = []
    for a in range(1, 31):
        for b in range(1, 31):
            for op, answer in (("add", a + b), ("sub", a - b)):
                if op == "sub" and a <= b:
                    continue
                key = f"arith:1:{op}:{a}:{b}"
                name, item = NAMES[stable_index(key + "name", len(NAMES))], ITEMS[stable_index(key + "item", len(ITEMS))]
                form = TRANSFER[op][stable_index(key + "transfer", len(TRANSFER[op]))]
                out.append(Problem(f"arith:1:{op}-transfer:{a}:{b}", form.format(a=a, b=b, name=name, item=item),
                                   str(answer), 1, group=canonical(key)))
    return tuple(out)


@cache
def universe(level: int, phrasing: str = "seen") -> tuple[Problem, ...]:
    out = []
    if level == 1:
        for a in range(1, 31):
            for b in range(1, 31):
                out.append(_problem(1, "add", a + b, phrasing, a=a, b=b))
    elif level == 2:
        for a in range(10, 100):
            for b in range(10, 100, 3):
                out.append(_problem(2, "add", a + b, phrasing, a=a, b=b))
                if a >= b:
                    out.append(_problem(2, "sub", a - b, phrasing, a=a, b=b))
    elif level == 3:
        for a in range(2, 13):
            for b in range(2, 13):
                out.append(_problem(3, "mul", a * b, phrasing, a=a, b=b))
        for i, name in enumerate(NAMES):
            for j, item in enumerate(ITEMS):
                for a in range(5, 25, 4):
                    b = 2 + (i + j + a) % 9
                    out.append(_problem(3, "word-add", a + b, phrasing, name=name, item=item, a=a, b=b))
                    out.append(_problem(3, "word-sub", a - b, phrasing, name=name, item=item, a=a, b=b))
    else:
        raise ValueError(f"no arithmetic level {level}")
    return tuple(out)


def problems(levels: Sequence[int], split: str, phrasing: str = "seen") -> list[Problem]:
    if phrasing == "transfer":  # held out whole: no training prompt has these forms
        return [p for p in transfer_universe() if split == "eval" and split_of(p.canonical) == "eval"] if 1 in levels else []
    return [p for level in sorted(set(levels)) for p in universe(level, phrasing) if split_of(p.key) == split]


def check_disjoint(train_prompts: set[str], eval_prompts: list[str]) -> list[str]:
    """Eval prompts that also occur among training prompts (should be none)."""
    return [p for p in eval_prompts if p in train_prompts]


SPEC = FamilySpec(
    name="arithmetic",
    summary="Sums, differences, products and one-step word problems; the answer is a number",
    problems=problems,
    grade=grade_value,
    levels=(1, 2, 3),
    phrasings=("seen", "unseen", "varied", "transfer"),
)

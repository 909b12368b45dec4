"""What a task family tells the rest of selfloop: its problems, how a response is graded, what its answers are.

A family is one module declaring a `FamilySpec`; the registry (`selfloop.families`) lists the built-in ones and
reads the entry point group `selfloop.families`. Task pools, held-out suites, the judge phase's grading and the
evaluate phase all go through it: nothing guesses an answer's kind from its text. Torch-free.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from selfloop.families.answers import DEFAULT_CHAIN, EXTRACTORS

Split = Literal["train", "eval"]


@dataclass(frozen=True)
class Problem:
    key: str  # stable: identifies the problem (its wordings share it), e.g. "arith:1:add:7:12"
    prompt: str
    answer: str
    level: int = 1
    # The problem's canonical form, which the split is a hash of: problems that are one question (7 + 12 and 12 + 7;
    # the same operands as a word problem; an instruction that differs only in a constraint's value) share it, so
    # they fall on the same side of every split. None: the key itself.
    group: str | None = None

    @property
    def canonical(self) -> str:
        return self.group or self.key


@dataclass(frozen=True)
class Grade:
    predicted: str | None  # what was read from the response (an extracted answer, or "k/n followed")
    correct: bool
    parts: tuple[bool, ...] | None = None  # per checked part (instruction following: per constraint)


# problems(levels, split, phrasing) -> the split's problems, in a fixed order
Problems = Callable[[Sequence[int], str, str], list[Problem]]  # (levels, split: train or eval, phrasing)
# grade(response, answer, extractors) -> Grade; `extractors` is the family's own FamilySpec.extractors, for
# families whose answers are values read from free text
Grader = Callable[[str | None, str, Sequence[str]], Grade]


PHRASINGS = ("seen", "unseen", "varied", "transfer", "novel")
HELD_OUT_WHOLE = ("transfer", "novel")  # suites only: nothing of these is ever a training prompt


@dataclass(frozen=True)
class FamilySpec:
    name: str  # the config's kind (`generation.tasks.kind`, `eval.suites[].kind`) and `prompts.family`
    summary: str
    grade: Grader
    problems: Problems | None = None  # None: no generator; its answers come from a user's file (`family: NAME`)
    levels: tuple[int, ...] = (1,)
    # Of: seen, unseen (held-out wordings), varied (training-only variants); and for suites only, held out whole:
    # transfer (the problems' content in forms no training prompt uses), novel (new tasks, topics and kinds).
    phrasings: tuple[str, ...] = ("seen",)
    splits: tuple[Split, ...] = ("train", "eval")  # a family without 'train' is evaluation only
    # Its answers are values a majority vote over extracted answers can be checked against (False: a verdict
    # per sample only, e.g. a constraint list; majority@k is then the majority of the k samples' verdicts).
    votable: bool = True
    part_metric: str | None = None  # a suite metric: the share of all parts passed (Grade.parts)
    # How grading reads an answer from a response (judging.answers' extractor names, tried in order): fixed per
    # family, never the loop's judge.vote.extractors, so loops (a lab's arms) that vote differently are graded alike.
    extractors: tuple[str, ...] = DEFAULT_CHAIN

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", self.name) or self.name in ("seed", "jsonl"):
            raise ValueError(f"family name {self.name!r}: 1-40 lower-case letters, digits or '_' (not seed or jsonl)")
        if not callable(self.grade) or (self.problems is not None and not callable(self.problems)):
            raise ValueError(f"family {self.name!r}: grade (and problems, where given) must be functions")
        if not set(self.phrasings) <= set(PHRASINGS) or "seen" not in self.phrasings:
            raise ValueError(f"family {self.name!r}: phrasings must include 'seen' and be of {', '.join(PHRASINGS)}")
        if not self.splits or not set(self.splits) <= {"train", "eval"}:
            raise ValueError(f"family {self.name!r}: splits must be of train, eval")
        if not self.levels or any(not isinstance(v, int) or v < 1 for v in self.levels):
            raise ValueError(f"family {self.name!r}: levels must be positive integers")
        if not self.extractors or any(e not in EXTRACTORS for e in self.extractors):
            raise ValueError(f"family {self.name!r}: extractors must be a non-empty list of {', '.join(EXTRACTORS)}")

    def check(self, response: str | None, answer: str) -> Grade:
        """Grade a response against its known answer by the family's own rule (grade with its extractors)."""
        return self.grade(response, answer, self.extractors)

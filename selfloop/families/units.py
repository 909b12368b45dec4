"""Unit conversions with numeric answers: a verifiable skill that is not plain arithmetic notation.

Like the arithmetic generator, a fixed universe split once by a hash of each problem's key. The
units family is evaluation only; its 'unseen' phrasing asks the same conversions in other words.
"""

from __future__ import annotations

from functools import cache

from selfloop.families.phrasing import pick, stable_index
from selfloop.families.spec import FamilySpec, Problem
from selfloop.families.value import grade_value

# (plural big unit, plural small unit, factor, question template)
CONVERSIONS = [
    ("hours", "minutes", 60, "How many minutes are there in {n} hours?"),
    ("minutes", "seconds", 60, "How many seconds are there in {n} minutes?"),
    ("days", "hours", 24, "How many hours are there in {n} days?"),
    ("weeks", "days", 7, "How many days are there in {n} weeks?"),
    ("kilometres", "metres", 1000, "Convert {n} kilometres to metres."),
    ("metres", "centimetres", 100, "How many centimetres are in {n} metres?"),
    ("kilograms", "grams", 1000, "How many grams are in {n} kilograms?"),
    ("litres", "millilitres", 1000, "Convert {n} litres to millilitres."),
    ("years", "months", 12, "How many months are there in {n} years?"),
    ("dozens", "eggs", 12, "How many eggs are in {n} dozen eggs?"),
]
OTHER_WORDINGS = ("Express {n} {big} in {small}.", "If you have {n} {big}, how many {small} is that?",
                  "{n} {big} make how many {small}?")


@cache
def universe(phrasing: str = "seen") -> tuple[Problem, ...]:
    return tuple(
        Problem(key := f"units:{big}:{n}", pick((template, *OTHER_WORDINGS), key, phrasing).format(n=n, big=big, small=small),
                str(n * factor), 1)
        for big, small, factor, template in CONVERSIONS
        for n in range(1, 31)
    )


def split_of(key: str) -> str:
    """'eval' for about a third of the problems (a conversion and its number: the key), 'train' for the rest."""
    return "eval" if stable_index(key, 3) == 0 else "train"


def problems(split: str, phrasing: str = "seen") -> list[Problem]:
    return [p for p in universe(phrasing) if split_of(p.key) == split]


SPEC = FamilySpec(
    name="units",
    summary="Unit conversions (hours to minutes, kilograms to grams...); the answer is a number; evaluation only",
    problems=lambda levels, split, phrasing: problems(split, phrasing),
    grade=grade_value,
    phrasings=("seen", "unseen"),
    splits=("eval",),
)

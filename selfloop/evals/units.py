"""Unit conversions with numeric answers: a verifiable skill that is not plain arithmetic notation.

Like the arithmetic generator, a fixed universe split once by a hash of each problem's key.
"""

from __future__ import annotations

from functools import cache

from selfloop.evals.arithmetic import Problem, split_of

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
    ("dozens", "items", 12, "How many eggs are in {n} dozen eggs?"),
]


@cache
def universe() -> tuple[Problem, ...]:
    return tuple(
        Problem(f"units:{big}:{n}", template.format(n=n), str(n * factor), 1)
        for big, _, factor, template in CONVERSIONS
        for n in range(1, 31)
    )


def problems(split: str) -> list[Problem]:
    return [p for p in universe() if split_of(p.key) == split]

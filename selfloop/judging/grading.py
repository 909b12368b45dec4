"""Checking a response against a known answer: one function for evaluation, votes and calibration.

Two kinds of known answer:
- a value (arithmetic, units, a user's JSONL): the answer extracted from the response by the
  configured chain must equal the normalised known answer;
- a constraint list (`{"follow": [[kind, value], ...]}`, instruction following): every constraint's
  verifier must pass (IFEval's strict accuracy); each constraint's result is kept too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from selfloop.evals.instructions import followed, parse_answer
from selfloop.judging.answers import DEFAULT_CHAIN, extract_answer, normalise


@dataclass(frozen=True)
class Grade:
    predicted: str | None  # the extracted answer, or "k/n followed" for constraints
    correct: bool
    followed: tuple[bool, ...] | None = None  # per constraint, for instruction-following answers


def is_constraints(answer: str | None) -> bool:
    return parse_answer(answer) is not None


def grade(response: str | None, answer: str, chain: Sequence[str] = DEFAULT_CHAIN) -> Grade:
    constraints = parse_answer(answer)
    if constraints is not None:
        results = tuple(followed(response or "", constraints))
        return Grade(f"{sum(results)}/{len(results)} followed", all(results), results)
    predicted = extract_answer(response, chain)
    return Grade(predicted, predicted is not None and predicted == normalise(answer))

"""Value answers: the answer the family's extractor chain finds in a response (FamilySpec.extractors) must equal the known
one after normalisation (numbers as canonical decimals, text lower-cased). The grader of the seed tasks, of a
user's task and suite files (their `family` defaults to it) and of the numeric families."""

from __future__ import annotations

from collections.abc import Sequence

from selfloop.families.answers import DEFAULT_CHAIN, extract_answer, normalise
from selfloop.families.spec import FamilySpec, Grade


def grade_value(response: str | None, answer: str, extractors: Sequence[str] = DEFAULT_CHAIN) -> Grade:
    predicted = extract_answer(response, extractors or DEFAULT_CHAIN)
    return Grade(predicted, predicted is not None and predicted == normalise(answer))


SPEC = FamilySpec(
    name="value",
    summary="A value answer (a number or short text) read from the response by the extractor chain",
    grade=grade_value,
)

"""Majority vote over extracted answers (Self-Consistency; TTRL's pseudo-label).

Unparsable answers (None) are dropped before voting. The share of the winner among valid votes is
the vote's confidence. Ties are broken deterministically: the tied answer that occurs first in the
list wins, and the tie is reported.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class VoteResult:
    answer: str | None
    share: float
    n_valid: int
    n_votes: int
    tie: bool
    tied: tuple[str, ...]  # every answer sharing the top count, in first-occurrence order (when tie)

    def agrees(self, answer: str | None) -> bool:
        return answer is not None and answer == self.answer


def vote(answers: Sequence[str | None]) -> VoteResult:
    valid = [a for a in answers if a is not None]
    if not valid:
        return VoteResult(None, 0.0, 0, len(answers), False, ())
    counts = Counter(valid)
    top = max(counts.values())
    tied = tuple(dict.fromkeys(a for a in valid if counts[a] == top))  # first-occurrence order
    return VoteResult(tied[0], top / len(valid), len(valid), len(answers), len(tied) > 1, tied if len(tied) > 1 else ())


def majority_vote(answers: Sequence[str | None]) -> tuple[str | None, float]:
    """(majority answer, its share of the valid votes); (None, 0.0) when no vote is valid."""
    result = vote(answers)
    return result.answer, result.share


def answer_entropy(answers: Sequence[str | None]) -> float:
    """Entropy (nats) of the answers' counts; None (no answer read) is one more answer (R-Tuning-U's uncertainty;
    the drift monitor's collapse of a prompt's answers)."""
    counts = Counter("\0none" if a is None else a for a in answers)
    n = sum(counts.values())
    return -sum(c / n * math.log(c / n) for c in counts.values()) if n else 0.0

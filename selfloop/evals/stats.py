"""Confidence intervals for accuracies measured on a finite suite."""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959964


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (well-behaved near 0 and 1 and for small n)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference(candidate: Sequence[bool], baseline: Sequence[bool], z: float = Z95) -> tuple[float, float, float]:
    """(mean difference, low, high) of candidate - baseline accuracy on the same items.

    Paired: the per-item differences d_i in {-1, 0, 1} carry the correlation between the two policies,
    so the interval is much tighter than two independent intervals would suggest.
    """
    n = len(candidate)
    if n == 0 or n != len(baseline):
        raise ValueError("paired accuracies need the same, non-empty items")
    d = [float(c) - float(b) for c, b in zip(candidate, baseline)]
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1) if n > 1 else 0.0
    half = z * math.sqrt(var / n)
    return mean, mean - half, mean + half

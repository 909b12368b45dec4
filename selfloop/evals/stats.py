"""Confidence intervals for accuracies measured on a finite suite."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

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


def two_sided_p(mean: float, se: float) -> float:
    """The normal approximation's two-sided p-value of a mean difference against 0."""
    if se <= 0:
        return 0.0 if mean != 0 else 1.0
    return math.erfc(abs(mean / se) / math.sqrt(2))


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (family-wise error over the m comparisons): sorted ascending, the i-th
    (from 1) is multiplied by m - i + 1, made monotone, and capped at 1."""
    m = len(pvalues)
    adjusted, running = {}, 0.0
    for i, (name, p) in enumerate(sorted(pvalues.items(), key=lambda kv: kv[1])):
        running = max(running, min(1.0, (m - i) * p))
        adjusted[name] = running
    return adjusted


def bootstrap_ratio(numerator: Mapping[int, Sequence[float]], denominator: Mapping[int, Sequence[float]], *,
                    draws: int = 2000, seed: int = 0) -> tuple[float | None, float | None, float | None, float]:
    """(ratio, low, high, share of draws whose denominator was not positive) of mean(numerator) / mean(denominator)
    over per-item values (e.g. an arm's and the oracle's gains over the control), resampled over seeds and over
    items within each seed, the same items for both (they are paired): a 95 % percentile interval. Draws whose
    denominator is not positive have no ratio; their share is returned (a large share: the ceiling is noise)."""
    seeds = sorted(set(numerator) & set(denominator))
    if not seeds or any(len(numerator[s]) != len(denominator[s]) or not numerator[s] for s in seeds):
        return None, None, None, 1.0

    def mean_of(values: Mapping[int, Sequence[float]], picks: list[tuple[int, list[int]]]) -> float:
        total = sum(sum(values[s][i] for i in items) for s, items in picks)
        return total / sum(len(items) for _, items in picks)

    whole = [(s, list(range(len(numerator[s])))) for s in seeds]
    den = mean_of(denominator, whole)
    point = mean_of(numerator, whole) / den if den > 0 else None
    import random

    rng, ratios, undefined = random.Random(seed), [], 0
    for _ in range(draws):
        picks = []
        for s in (rng.choice(seeds) for _ in seeds):
            n = len(numerator[s])
            picks.append((s, [rng.randrange(n) for _ in range(n)]))
        d = mean_of(denominator, picks)
        if d <= 0:
            undefined += 1
            continue
        ratios.append(mean_of(numerator, picks) / d)
    if not ratios:
        return point, None, None, 1.0
    ratios.sort()
    low = ratios[int(0.025 * (len(ratios) - 1))]
    high = ratios[int(math.ceil(0.975 * (len(ratios) - 1)))]
    return point, low, high, undefined / draws

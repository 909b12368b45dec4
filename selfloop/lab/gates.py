"""The gate's decisions, re-taken under other rules (`selfloop lab gates LAB`).

Every gated iteration stores both policies' answers to every suite (eval_items, roles candidate and
baseline), so each promotion decision can be re-taken under another rule from the same rows and its
outcome read on the test splits no decision saw: how often did the gate promote a candidate that lost on
test, and what would a stricter rule have cost in gains it rejected?

Only single decisions are exact. A loop that rejects continues from its old policy, so what it would have
trained next is not in the store: the final policy under another rule needs a real run (an arm with that
`eval.tolerance`).

The label-free gate (`eval.main_metric: SUITE/self_consistency`, for users without a labelled suite) is re-taken the
same way where a suite was answered with majority_k >= 2: the candidate is promoted when its self-consistency (the
greedy answer is its k samples' majority) is not below the current policy's by more than the loop's own tolerance.
Its decisions are set against the labelled gate's as the loops ran: a confusion table and the share that agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from selfloop.evals.stats import paired_difference

Interval = tuple[float, float, float]  # candidate - baseline: mean, 95% low, 95% high
EPS = 1e-9

# What the gate could require of the candidate's difference over the current policy on its suite.
RULES: dict[str, Callable[[Interval], bool]] = {
    "tolerance 0.02": lambda d: d[0] >= -0.02 - EPS,  # the demos' eval.tolerance
    "tolerance 0": lambda d: d[0] >= -EPS,
    "gain >= 0.02": lambda d: d[0] >= 0.02 - EPS,
    "95% interval above 0": lambda d: d[1] > 0,
}


@dataclass(frozen=True)
class Decision:
    loop: str
    iteration: int
    promoted: bool
    diffs: dict[str, Interval]  # suite -> paired difference of the candidate over the baseline
    consistency: dict[str, Interval] = field(default_factory=dict)  # suite -> the same, of self-consistency flags


def decisions(session: Session, loop_prefix: str = "") -> list[Decision]:
    """Every decided iteration that trained a candidate, with its paired differences on every suite."""
    from selfloop.db.lab import gated_iterations, item_predictions, item_verdicts
    from selfloop.phases.evaluate import consistent

    found = gated_iterations(session, loop_prefix)
    out = []
    for iteration_id, number, promoted, name in found:
        answers: dict[tuple[str, str], dict[int, bool]] = {}
        for role, suite, index, correct in item_verdicts(session, iteration_id):
            answers.setdefault((suite, role), {})[index] = bool(correct)
        agreeing: dict[tuple[str, str], dict[int, bool]] = {}
        sampled: set[str] = set()
        for role, suite, index, predicted, majority in item_predictions(session, iteration_id):
            agreeing.setdefault((suite, role), {})[index] = consistent(predicted, majority)
            if majority is not None:
                sampled.add(suite)
        diffs = _paired(answers)
        consistency = {s: d for s, d in _paired(agreeing).items() if s in sampled}
        out.append(Decision(name, number, bool(promoted), diffs, consistency))
    return out


def _paired(flags: dict[tuple[str, str], dict[int, bool]]) -> dict[str, Interval]:
    """Per suite: the candidate's flags minus the baseline's, paired over the items both answered."""
    out = {}
    for suite in sorted({s for s, _ in flags}):
        candidate, baseline = flags.get((suite, "candidate"), {}), flags.get((suite, "baseline"), {})
        keys = sorted(candidate.keys() & baseline.keys())
        if keys:
            out[suite] = paired_difference([candidate[k] for k in keys], [baseline[k] for k in keys])
    return out


def label_free_agreement(found: Iterable[Decision], suite: str, tolerance_of: Callable[[str], float]) -> dict | None:
    """The label-free gate re-taken on `suite`'s self-consistency for every decision that has it (the candidate
    promoted when its paired difference is at least -tolerance, the loop's own), against the labelled gate's
    decision as the loop ran: counts per cell and the share that agree. None: no decision has it."""
    rows = [(d.promoted, d.consistency[suite][0] >= -tolerance_of(d.loop) - EPS) for d in found if suite in d.consistency]
    if not rows:
        return None
    cells = {"both promote": sum(a and b for a, b in rows), "labelled only": sum(a and not b for a, b in rows),
             "label-free only": sum(b and not a for a, b in rows), "both reject": sum(not a and not b for a, b in rows)}
    agree = cells["both promote"] + cells["both reject"]
    return {"suite": suite, "decisions": len(rows), **cells, "agreement": agree / len(rows)}


def render_agreement(result: dict | None) -> str:
    if result is None:
        return ("No suite was answered with majority_k >= 2: the label-free gate (self-consistency) cannot be re-taken "
                "(give the gate's suite majority_k).\n")
    return (f"The label-free gate (self-consistency on {result['suite']}, each loop's tolerance) against the labelled "
            f"gate, over {result['decisions']} decisions: agrees on {result['agreement']:.0%} | both promote "
            f"{result['both promote']}, labelled only {result['labelled only']}, label-free only "
            f"{result['label-free only']}, both reject {result['both reject']}\n")


def complete(found: Iterable[Decision], gate: str, report: list[str]) -> list[Decision]:
    """The decisions with rows on the gate's suite and on every reported suite."""
    return [d for d in found if gate in d.diffs and all(s in d.diffs for s in report)]


def replay(found: Iterable[Decision], gate: str, report: list[str]) -> dict[str, dict]:
    """Per rule: the candidates it promotes and, on each reported suite, how many of those lost (mean below 0),
    lost beyond the noise (interval below 0), how many it rejected that gained beyond the noise, and the
    promoted candidates' differences summed, in points. Decisions without rows on every suite are left out."""
    found = complete(found, gate, report)
    out = {}
    for name, rule in RULES.items():
        kept = [d for d in found if rule(d.diffs[gate])]
        dropped = [d for d in found if not rule(d.diffs[gate])]
        row: dict = {"decisions": len(found), "promoted": len(kept)}
        for suite in report:
            row[suite] = {
                "promoted_lost": sum(d.diffs[suite][0] < -EPS for d in kept),
                "promoted_lost_beyond_noise": sum(d.diffs[suite][2] < 0 for d in kept),
                "rejected_gained_beyond_noise": sum(d.diffs[suite][1] > 0 for d in dropped),
                "promoted_points": round(100 * sum(d.diffs[suite][0] for d in kept), 1),
            }
        out[name] = row
    return out


def render(found: list[Decision], gate: str, report: list[str], result: dict[str, dict]) -> str:
    used = complete(found, gate, report)
    lines = [f"{len(used)} decisions on {gate} ({sum(d.promoted for d in used)} promoted as the loops ran); "
             f"each re-taken under every rule, its outcome read on {', '.join(report)}:"]
    for name, row in result.items():
        cells = "; ".join(f"{s}: {c['promoted_lost']} of them lost ({c['promoted_lost_beyond_noise']} beyond noise), "
                          f"{c['promoted_points']:+.1f} points in all, {c['rejected_gained_beyond_noise']} rejected "
                          "that gained beyond noise" for s, c in ((s, row[s]) for s in report))
        lines.append(f"  {name:>20}: promotes {row['promoted']:3d} | {cells}")
    if len(used) < len(found):
        lines.append(f"{len(found) - len(used)} decision(s) left out: both policies did not answer every reported suite "
                     "(a suite with `when: ends` is answered by one policy of a loop's last iteration: answer it every "
                     "iteration to re-take them).")
    lines.append("Single decisions only: a rejection changes what a loop trains next (docs/lab.md).")
    return "\n".join(lines) + "\n"

"""The collapse guard replayed over a lab's results lines, and the checkpoint it would have kept.

A line records each iteration's label-free monitors (`monitors`, what selfloop/guard.py reads from the store) and
each test suite's curve (the greedy accuracy of the policy after each iteration's gate). Replaying the guard as the
loop would have run it, after each iteration in turn, gives the iteration it fires at and the policy it keeps (the
one after iteration `kept`; the start when none). That policy is compared on each reported suite with:

- the best on test: the best of the start and every iteration's policy, read on that suite (the choice a user with
  the test split's labels would make; here only to measure against, never to choose). Regret, in points:
  best - kept, 0 or more;
- the labelled gate: the policy the loop ended with (its last promoted candidate, else the start).

An arm collapses when it ends below its start on the suite; the guard stops it in time when it fires before the
arm's last iteration and keeps a policy not below the start there.
"""

from __future__ import annotations

from typing import Any

from selfloop.guard import Decision, decide


def first_decision(monitors: list[dict[str, float]], cfg: Any) -> tuple[int, Decision] | None:
    """(iteration it fires after, its decision) for the first iteration at which the guard fires, or None."""
    history = [(int(m["iteration"]), {k: float(v) for k, v in m.items() if k != "iteration"})
               for m in sorted(monitors, key=lambda m: m["iteration"])]
    for upto in range(1, len(history) + 1):
        decision = decide(history[:upto], cfg)
        if decision is not None:
            return history[upto - 1][0], decision
    return None


def _accuracy(flags: str) -> float | None:
    return flags.count("1") / len(flags) if flags else None


def replay_line(line: dict[str, Any], cfg: Any, suites: list[str]) -> dict[str, Any]:
    """One arm x seed: where the guard fires, the policy it keeps, and on each suite of `suites` the kept policy's
    accuracy beside the start's, the best iteration's and the labelled gate's (fractions of 1; regrets in the same)."""
    fired = first_decision(line.get("monitors") or [], cfg)
    iterations = int(line.get("iterations") or 0)
    kept = fired[1].kept if fired else iterations  # no decision: the loop ran to its end with the gate's policy
    out: dict[str, Any] = {"arm": line["arm"], "seed": line["seed"], "iterations": iterations,
                           "fired_at": fired[0] if fired else None, "rule": fired[1].rule if fired else None,
                           "why": fired[1].why if fired else None, "kept": kept, "suites": {}}
    for suite in suites:
        rows = line["suites"].get(suite)
        if rows is None:
            continue
        start, gate = _accuracy(rows["start"]), _accuracy(rows["final"])
        if start is None or gate is None:
            continue
        measured = rows.get("curve", [])
        if any(c is None for c in measured):
            continue  # not answered every iteration (a suite answered at the loop's ends only): nothing to replay on
        curve = [start, *measured]  # [k]: after iteration k
        guard = start if kept is None else curve[min(kept, len(curve) - 1)]
        best = max(curve)
        best_at = curve.index(best)
        collapsed = curve[-1] < start
        out["suites"][suite] = {
            "start": start, "guard": guard, "gate": gate, "best": best, "best_at": best_at, "end": curve[-1],
            "guard_regret": best - guard, "gate_regret": best - gate, "collapsed": collapsed,
            "stopped_in_time": (fired is not None and fired[0] < iterations and guard >= start) if collapsed else None}
    return out


def replay(lines: list[dict[str, Any]], cfg_of: Any, suites: list[str], *, min_iterations: int = 4) -> list[dict[str, Any]]:
    """The replay of every line with at least `min_iterations` iterations and its monitors (the long arms: a
    3-iteration arm has too short a history to rise and fall); `cfg_of(arm)` is that arm's guard config."""
    return [replay_line(l, cfg_of(l["arm"]), suites) for l in sorted(lines, key=lambda l: (l["arm"], l["seed"]))
            if int(l.get("iterations") or 0) >= min_iterations and l.get("monitors")]


def policies(v: dict[str, Any]) -> str:
    """A suite's start / kept / best (at iteration) / gate accuracies of one replayed line, in percent."""
    return f"{100 * v['start']:.1f} / {100 * v['guard']:.1f} / {100 * v['best']:.1f} ({v['best_at']}) / {100 * v['gate']:.1f}"


def regrets(v: dict[str, Any]) -> str:
    """The kept policy's and the gate's regret against the best on the suite, in points."""
    return f"{100 * v['guard_regret']:.1f}, {100 * v['gate_regret']:.1f}"


def markdown(block: dict[str, Any]) -> str:
    """The replay as a table (per arm x seed: where the guard fired, each suite's start, kept, best-on-test and gate
    policies and the two regrets, in points) and its goals; empty when no line has a long history of monitors."""
    rows, suites = block["rows"], block["suites"]
    if not rows:
        return ""
    head = "| arm | seed | fired after | rule | kept | " + " | ".join(
        f"{s}: start / kept / best (at) / gate; regret of kept, of gate" for s in suites) + " |"
    out = ["The collapse guard replayed from each long arm's monitors under the arm's guard.* settings (the test "
           "split only measures it; percent, regrets in points):", "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [r["arm"], str(r["seed"]), "" if r["fired_at"] is None else str(r["fired_at"]), r["rule"] or "",
                 "start" if r["kept"] is None else f"iteration {r['kept']}"]
        for s in suites:
            v = r["suites"].get(s)
            cells.append("" if v is None else f"{policies(v)}; {regrets(v)}"
                         + ((" (collapsed, " + ("stopped in time)" if v["stopped_in_time"] else "not stopped)"))
                            if v["collapsed"] else ""))
        out.append("| " + " | ".join(cells) + " |")
    marks = {True: "met", False: "NOT met", None: "not measured"}
    within = block["within_2_points"]
    regret = {s: "none" if v is None else f"{100 * v:.1f}" for s, v in block["max_regret"].items()}
    out += ["", "- the guard's policy within 2 points of the best on test on every long arm x seed: " + ", ".join(
        f"{s} **{marks[within[s]]}** (largest regret {regret[s]} points)" for s in suites),
        f"- every collapsing arm (ending below its start) stopped before its end, at a policy not below the start: "
        f"**{marks[block['stopped_in_time']]}** ({len(block['collapsing'])} arm x seed x suite collapsed)"]
    return "\n".join(out) + "\n"


def section(lines: list[dict[str, Any]], suites: list[str], guards: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report's guard block: the replay's rows and its two goals, per reported suite: the kept policy within 2
    points of the best on test on every long arm x seed, and every collapsing one stopped in time (None: no such
    arm). `guards`: arm -> its guard config (default: the guard's defaults)."""
    from selfloop.config.evaluation import GuardConfig

    default = GuardConfig()
    rows = replay(lines, lambda arm: (guards or {}).get(arm, default), suites)
    regret = {s: max((r["suites"][s]["guard_regret"] for r in rows if s in r["suites"]), default=None) for s in suites}
    collapsing = [(r, s) for r in rows for s, v in r["suites"].items() if v["collapsed"]]
    return {"rows": rows, "suites": suites, "max_regret": regret,
            "within_2_points": {s: None if v is None else v <= 0.02 + 1e-9 for s, v in regret.items()},
            "collapsing": [{"arm": r["arm"], "seed": r["seed"], "suite": s} for r, s in collapsing],
            "stopped_in_time": all(r["suites"][s]["stopped_in_time"] for r, s in collapsing) if collapsing else None}

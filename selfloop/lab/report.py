"""A lab's comparison, from its results lines alone (so a table can be assembled from pieces run on different days
and machines, each line saying which commit made it).

Per arm, suite and seed: the gain of the arm's final policy over the control's on the same items, with the paired 95 %
interval; per arm and suite: the mean and spread over seeds, how many seeds are beyond the noise, the pooled
interval over seeds (each item's gain averaged over the seeds, then a paired interval over the items: the item is
the unit, so an item's correlation across seeds does not narrow it), and the fraction of the oracle arm's mean gain
(or of the arm's own ceiling, the lab file's `ceilings`).
The reported suites are the test splits (no decision ever read them) when the lab has any; validation suites are
in the JSON too. `goals` marks the efficacy lab's goals met or not, from the same numbers.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfloop.evals.stats import Z95, paired_difference

SEEDS_FOR_A_CLAIM = 3  # a goal is met only on at least this many seeds


@dataclass
class Cell:
    """One arm on one suite over its seeds."""

    arm: str
    suite: str
    gains: dict[int, tuple[float, float, float]] = field(default_factory=dict)  # seed -> (gain, low, high)
    promoted_worse: list[int] = field(default_factory=list)  # seeds whose promoted final is worse beyond noise
    diffs: dict[int, list[float]] = field(default_factory=dict)  # seed -> per-item final - control's final

    @property
    def mean(self) -> float:
        return statistics.fmean(g for g, _, _ in self.gains.values())

    @property
    def sd(self) -> float:
        return statistics.stdev([g for g, _, _ in self.gains.values()]) if len(self.gains) > 1 else 0.0

    @property
    def beyond_noise(self) -> int:
        return sum(1 for _, low, _ in self.gains.values() if low > 0)

    def pooled(self, minus: Cell | None = None) -> tuple[float, float, float] | None:
        """(mean, low, high) over the seeds: each item's difference averaged over the seeds, then a 95 % interval
        over the items. `minus`: against another arm's cell on the seeds both have (the control cancels)."""
        seeds = sorted(self.diffs if minus is None else set(self.diffs) & set(minus.diffs))
        if not seeds:
            return None
        n = len(self.diffs[seeds[0]])
        per_item = [statistics.fmean(self.diffs[s][i] - (minus.diffs[s][i] if minus else 0.0) for s in seeds)
                    for i in range(n)]
        mean = statistics.fmean(per_item)
        half = Z95 * math.sqrt(statistics.variance(per_item) / n) if n > 1 else 0.0
        return mean, mean - half, mean + half


def outcome_line(outcome: dict[str, Any], arm: str, seed: int, suites: list[dict[str, Any]]) -> dict[str, Any]:
    """A results line's comparable part from a finished loop's `loop_outcome` and its suites' definitions (the split
    and wording of each, as dumped from the config): correct flags as '0'/'1' strings."""
    kinds = {s["name"]: {"split": s.get("split", "eval"), "phrasing": s.get("phrasing", "seen")} for s in suites}
    line = {**outcome, "arm": arm, "seed": seed, "suites": {}}
    for suite, rows in outcome["suites"].items():
        line["suites"][suite] = {**rows, **kinds.get(suite, {}),
                                 "start": "".join("1" if c else "0" for c in rows["start"]),
                                 "final": "".join("1" if c else "0" for c in rows["final"])}
    return line


def _flags(bits: str) -> list[bool]:
    return [b == "1" for b in bits]


def compare(lines: list[dict[str, Any]], control: str, oracle: str | None, *, spurious: str | None = None,
            label_free: tuple[str, ...] | list[str] | None = (), demo: str | None = None,
            ceilings: dict[str, str] | None = None) -> dict[str, Any]:
    """The comparison as a JSON-ready mapping (see the module docstring); the goals need the arms' roles: the
    spurious-reward control, the label-free arms and the demo's arm. `ceilings`: arm -> the arm its fraction of the
    oracle is taken against instead of `oracle` (the goals always read `oracle`)."""
    if not lines:
        return {"arms": [], "suites": [], "cells": [], "missing_control": False, "cost": cost([])}
    controls = {l["seed"]: l for l in lines if l["arm"] == control}
    suites = sorted({s for l in lines for s in l["suites"]})
    split = {s: next(l["suites"][s].get("split", "eval") for l in lines if s in l["suites"]) for s in suites}
    reported = [s for s in suites if split[s] == "test"] or suites
    arms = list(dict.fromkeys(l["arm"] for l in lines))
    cells: dict[tuple[str, str], Cell] = {}
    for line in lines:
        reference = controls.get(line["seed"]) or next(iter(controls.values()), None)
        if reference is None:
            continue
        for suite, rows in line["suites"].items():
            theirs = reference["suites"].get(suite)
            if theirs is None or len(theirs["final"]) != len(rows["final"]):
                continue
            cell = cells.setdefault((line["arm"], suite), Cell(line["arm"], suite))
            gain = paired_difference(_flags(rows["final"]), _flags(theirs["final"]))
            cell.gains[line["seed"]] = gain
            cell.diffs[line["seed"]] = [float(a) - float(b) for a, b in zip(_flags(rows["final"]), _flags(theirs["final"]))]
            start = paired_difference(_flags(rows["final"]), _flags(rows["start"]))
            if line.get("promoted") and start[2] < 0:
                cell.promoted_worse.append(line["seed"])
    out_cells = []
    for (arm, suite), cell in cells.items():
        top = (ceilings or {}).get(arm, oracle)
        ceiling = cells.get((top, suite)) if top else None
        fraction = cell.mean / ceiling.mean if ceiling is not None and ceiling.mean > 0 else None
        pooled = cell.pooled()
        out_cells.append({
            "arm": arm, "suite": suite, "split": split[suite], "reported": suite in reported,
            "seeds": sorted(cell.gains), "mean_gain": cell.mean, "sd_gain": cell.sd, "beyond_noise": cell.beyond_noise,
            "pooled": None if pooled is None else {"gain": pooled[0], "ci95": [pooled[1], pooled[2]]},
            "gains": {str(s): {"gain": g, "ci95": [lo, hi]} for s, (g, lo, hi) in sorted(cell.gains.items())},
            "fraction_of_oracle": fraction, "ceiling": top, "promoted_but_worse_than_start": cell.promoted_worse})
    by_arm = {a: [l for l in lines if l["arm"] == a] for a in arms}
    return {
        "control": control, "oracle": oracle, "suites": suites, "reported": reported, "splits": split,
        "arms": [{"arm": a, "seeds": sorted(l["seed"] for l in by_arm[a]),
                  "seconds": statistics.fmean(sum(l["phase_seconds"].values()) for l in by_arm[a]),
                  "signal": {k: statistics.fmean(l["signal"][k] for l in by_arm[a] if k in l.get("signal", {}))
                             for k in {k for l in by_arm[a] for k in l.get("signal", {})}},
                  "commits": sorted({l.get("commit") or "?" for l in by_arm[a]}),
                  "curves": {s: [l["suites"][s]["curve"] for l in by_arm[a] if s in l["suites"]] for s in suites}}
                 for a in arms],
        "cells": sorted(out_cells, key=lambda c: (arms.index(c["arm"]), c["suite"])),
        "missing_control": not controls,
        "goals": goals(cells, lines, reported, oracle, spurious, list(label_free or ()), demo),
        "cost": cost(lines),
    }


def cost(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the lab's machine time went, from the lines read (the last of each arm x seed): each piece's wall time
    (`run_seconds`; the sum of its phases on a line without one) summed over the pieces, the longest piece (a piece
    should stay under two hours) and each phase's seconds and share of the phases' sum."""
    if not lines:
        return {"pieces": 0, "machine_seconds": 0.0, "longest": None, "phases": {}}
    wall = {(l["arm"], l["seed"]): float(l.get("run_seconds") or sum(l.get("phase_seconds", {}).values())) for l in lines}
    phases: dict[str, float] = {}
    for line in lines:
        for phase, seconds in line.get("phase_seconds", {}).items():
            phases[phase] = phases.get(phase, 0.0) + float(seconds)
    total = sum(phases.values())
    (arm, seed), longest = max(wall.items(), key=lambda kv: kv[1])
    return {"pieces": len(wall), "machine_seconds": round(sum(wall.values()), 1),
            "longest": {"arm": arm, "seed": seed, "seconds": round(longest, 1)},
            "phases": {p: {"seconds": round(s, 1), "share": s / total if total else 0.0}
                       for p, s in sorted(phases.items(), key=lambda kv: -kv[1])}}


def _ci(interval: tuple[float, float, float] | None) -> str:
    return "none" if interval is None else f"{_pts(interval[0])} ({_pts(interval[1])}, {_pts(interval[2])})"


def goals(cells: dict[tuple[str, str], Cell], lines: list[dict[str, Any]], reported: list[str], oracle: str | None,
          spurious: str | None, label_free: list[str], demo: str | None) -> list[dict[str, Any]]:
    """The efficacy lab's goals, each {"goal", "met" (true, false, or null: not measurable from these lines), "why"}.
    Gains are pooled over the seeds; a goal is met only on at least SEEDS_FOR_A_CLAIM seeds."""
    phrasing = {s: next(l["suites"][s].get("phrasing", "seen") for l in lines if s in l["suites"]) for s in reported}
    unseen = [s for s in reported if phrasing[s] == "unseen"] or reported
    out = []

    def enough(cell: Cell | None) -> bool:
        return cell is not None and len(cell.gains) >= SEEDS_FOR_A_CLAIM

    # 1. The spurious-reward arm is within the noise of the control on every reported (test) suite.
    shuffled = [cells.get((spurious, s)) for s in reported] if spurious else []
    if not shuffled or any(c is None for c in shuffled):
        out.append({"goal": "spurious-reward arm within noise of the control", "met": None,
                    "why": "no spurious-reward arm named (lab file: spurious) or not run"})
    else:
        beyond = [s for s, c in zip(reported, shuffled) if c.pooled()[1] > 0]
        out.append({"goal": "spurious-reward arm within noise of the control",
                    "met": (not beyond) if all(enough(c) for c in shuffled) else None,
                    "why": "; ".join(f"{s}: {_ci(c.pooled())} over {len(c.gains)} seeds" for s, c in zip(reported, shuffled))
                    + (f"; beyond the noise on {', '.join(beyond)}: that gain is format, not the reward" if beyond else "")})
    # 2. The oracle gains beyond the noise on the unseen-wording test split, on every seed (at least three).
    ceiling = [cells.get((oracle, s)) for s in unseen] if oracle else []
    if not ceiling or any(c is None for c in ceiling):
        out.append({"goal": "oracle beyond noise on unseen wordings on every seed", "met": None, "why": "no oracle arm run"})
    else:
        out.append({"goal": "oracle beyond noise on unseen wordings on every seed",
                    "met": all(c.beyond_noise == len(c.gains) for c in ceiling) if all(enough(c) for c in ceiling) else None,
                    "why": "; ".join(f"{s}: beyond noise on {c.beyond_noise} of {len(c.gains)} seeds, pooled {_ci(c.pooled())}"
                                     for s, c in zip(unseen, ceiling))})
    # 3. A label-free arm reaches half the oracle's unseen-wording gain, beyond the noise over the seeds.
    if not ceiling or any(c is None for c in ceiling) or not label_free:
        out.append({"goal": "a label-free arm reaches half the oracle's unseen gain", "met": None,
                    "why": "needs the oracle and the label-free arms (lab file: label_free)"})
    else:
        reached, notes, measured = [], [], True
        for arm in label_free:
            mine = [cells.get((arm, s)) for s in unseen]
            if any(c is None for c in mine):
                continue
            measured = measured and all(enough(c) for c in mine)
            for s, c, top in zip(unseen, mine, ceiling):
                fraction = c.mean / top.mean if top.mean > 0 else None
                pooled = c.pooled()
                ok = enough(c) and fraction is not None and fraction >= 0.5 and pooled[1] > 0
                notes.append(f"{arm} {s}: {'' if fraction is None else f'{fraction:.2f} of the oracle, '}pooled {_ci(pooled)}"
                             + ("" if enough(c) else f" (on {len(c.gains)} seed{'s' * (len(c.gains) != 1)}: not a claim yet)"))
                if ok:
                    reached.append(arm)
        out.append({"goal": "a label-free arm reaches half the oracle's unseen gain",
                    "met": True if reached else (False if notes and measured else None),
                    "why": "; ".join(notes) or "no label-free arm run"})
    # 4. No arm's promoted final policy is worse than the start on a test split beyond the noise.
    worse = [f"{c.arm} on {c.suite} (seeds {c.promoted_worse})" for c in cells.values() if c.suite in reported and c.promoted_worse]
    out.append({"goal": "no promoted final policy worse than its start beyond noise", "met": not worse,
                "why": "; ".join(worse) or "none on the reported suites"})
    # 5. The demo's arm is the best label-free arm measured (by the pooled unseen-wording gain). An arm on fewer seeds
    # than a claim needs is not ranked: its mean over one seed is not comparable with a mean over three.
    run = [a for a in label_free if (a, unseen[0]) in cells]
    short = [a for a in run if not enough(cells[(a, unseen[0])])]
    # On an exact tie the demo ranks first: an arm is not better for equal gains
    ranked = sorted(((round(cells[(a, unseen[0])].pooled()[0], 9), a == demo, a) for a in run if a not in short), reverse=True)
    pending = f"; not ranked yet (fewer than {SEEDS_FOR_A_CLAIM} seeds): {', '.join(short)}" if short else ""
    if not demo or (demo, unseen[0]) not in cells:
        out.append({"goal": "the demo is the best label-free arm", "met": None, "why": "needs the demo's arm (lab file: demo)"})
    elif demo in short or not ranked:
        out.append({"goal": "the demo is the best label-free arm", "met": None,
                    "why": f"the demo's arm {demo} is not on {SEEDS_FOR_A_CLAIM} seeds yet" + pending})
    else:
        best = ranked[0][2]
        versus = cells[(best, unseen[0])].pooled(minus=cells[(demo, unseen[0])])
        out.append({"goal": "the demo is the best label-free arm", "met": best == demo,
                    "why": f"best on {unseen[0]}: {best}" + ("" if best == demo else
                           f", {_ci(versus)} over the demo's arm {demo}" + ("" if versus is None else
                           f" ({'beyond' if versus[1] > 0 else 'within'} the noise)")) + pending})
    return out


def _pts(x: float | None) -> str:
    return "" if x is None else f"{100 * x:+.1f}"


def markdown(name: str, result: dict[str, Any]) -> str:
    """The table the docs' results page holds: one row per arm, a column per reported suite."""
    if result.get("missing_control") or not result["cells"]:
        return f"Lab {name}: no finished control arm yet, nothing to compare.\n"
    suites = result["reported"]
    head = "| arm | seeds | " + " | ".join(f"{s} gain, mean (sd) [seeds beyond noise] pooled 95% CI" for s in suites) + \
           (" | fraction of the oracle" if result["oracle"] else "") + " | label acc. | rewarded right | seconds | commits |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    cells = {(c["arm"], c["suite"]): c for c in result["cells"]}
    for arm in result["arms"]:
        if arm["arm"] == result["control"]:
            continue
        row = [arm["arm"], str(len(arm["seeds"]))]
        for s in suites:
            c = cells.get((arm["arm"], s))
            row.append("" if c is None else f"{_pts(c['mean_gain'])} ({100 * c['sd_gain']:.1f}) [{c['beyond_noise']}/{len(c['seeds'])}]"
                       + (f" pooled ({_pts(c['pooled']['ci95'][0])}, {_pts(c['pooled']['ci95'][1])})" if c.get("pooled") else ""))
        if result["oracle"]:
            fractions = [cells[(arm["arm"], s)]["fraction_of_oracle"] for s in suites if (arm["arm"], s) in cells]
            row.append(", ".join("" if f is None else f"{f:.2f}" for f in fractions))
        sig = arm["signal"]
        row += [f"{sig['label_accuracy']:.2f}" if "label_accuracy" in sig else "",
                f"{sig['rewarded_right']:.2f}" if "rewarded_right" in sig else "",
                f"{arm['seconds']:.0f}", ", ".join(c[:10] for c in arm["commits"])]
        lines.append("| " + " | ".join(row) + " |")
    marks = {True: "met", False: "NOT met", None: "not measured"}
    lines += ["", "Goals:"] + [f"- {g['goal']}: **{marks[g['met']]}** ({g['why']})" for g in result.get("goals", [])]
    spent = result.get("cost")
    if spent and spent["pieces"]:
        top = spent["longest"]
        lines += ["", f"Cost: {spent['pieces']} pieces, {spent['machine_seconds']:.0f} s of machine time "
                  f"({spent['machine_seconds'] / 3600:.1f} h; the longest, {top['arm']}/{top['seed']}, {top['seconds']:.0f} s); "
                  + ", ".join(f"{p} {100 * v['share']:.0f} %" for p, v in spent["phases"].items() if v["share"] >= 0.005)]
    return "\n".join(lines) + "\n"


def write_report(name: str, result: dict[str, Any], out: Path) -> Path:
    """report.json, report.md and index.html (bars with each seed's interval per arm and suite, curves per
    iteration; opens offline: plotly.min.js is copied beside it)."""
    from selfloop.output_dir import write_folder
    from selfloop.ui.app import plotly_js

    table = markdown(name, result)
    bars, curves = charts(result)
    rows = "".join(f"<pre>{_escape(table)}</pre>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>lab {_escape(name)}</title>
<script src="plotly.min.js"></script></head><body>
<h1>Lab {_escape(name)}</h1>
<p>Gain of each arm's final policy over the control ({_escape(result['control'])}) on the reported suites, in points: the
mean over seeds with one standard deviation; the table gives each arm's seeds beyond the noise (paired 95 % interval).</p>
<div id="bars" style="height:420px"></div><div id="curves" style="height:420px"></div>{rows}
<script>
Plotly.newPlot("bars", {script_json(bars)}, {{"barmode": "group", "yaxis": {{"title": "gain (points)"}}}});
Plotly.newPlot("curves", {script_json(curves)}, {{"xaxis": {{"title": "iteration"}}, "yaxis": {{"title": "greedy accuracy"}}}});
</script></body></html>"""
    write_folder(out, {"report.json": json.dumps(result, indent=1, sort_keys=True),
                       "report.md": f"# Lab {name}\n\n{table}", "plotly.min.js": plotly_js(), "index.html": page})
    return out / "index.html"


def script_json(value: Any) -> str:
    """JSON to put inside a <script> element: no '<', '>' or '&' (an arm named `</script><script>...` would end
    the element and run), nor the two line separators JavaScript reads as line ends."""
    return (json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def charts(result: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """Plotly traces: bars of each arm's mean gain (points, one standard deviation over seeds) per reported suite,
    and each arm x seed's accuracy per iteration on them."""
    bars, curves = [], []
    for suite in result["reported"]:
        cells = [c for c in result["cells"] if c["suite"] == suite and c["arm"] != result["control"]]
        bars.append({"type": "bar", "name": suite, "x": [c["arm"] for c in cells], "y": [100 * c["mean_gain"] for c in cells],
                     "error_y": {"type": "data", "array": [100 * c["sd_gain"] for c in cells]}})
    for arm in result["arms"]:
        for suite in result["reported"]:
            for seed, curve in zip(arm["seeds"], arm["curves"].get(suite, [])):
                curves.append({"type": "scatter", "mode": "lines+markers", "name": f"{arm['arm']} s{seed} {suite}",
                               "x": list(range(1, len(curve) + 1)), "y": curve})
    return bars, curves


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

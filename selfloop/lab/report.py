"""A lab's comparison, from its results lines alone (so a table can be assembled from pieces run on different days
and machines, each line saying which commit made it).

Per arm, suite and seed: the gain of the arm's final policy over the control's on the same items, with the paired 95 %
interval; per arm and suite: the mean and spread over seeds, how many seeds are beyond the noise, the pooled
interval over seeds (each item's gain averaged over the seeds, then a paired interval over the items: the item is
the unit, so an item's correlation across seeds does not narrow it), and the fraction of the oracle arm's mean gain
(or of the arm's own ceiling, the lab file's `ceilings`).
The reported suites are the test splits (no decision ever read them) when the lab has any; validation suites are
in the JSON too. `goals` marks the efficacy lab's goals met or not, from the same numbers; `guard` replays the
collapse guard over the long arms' monitors (lab/guard_replay.py).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfloop.evals.stats import Z95, bootstrap_ratio, holm, paired_difference, two_sided_p
from selfloop.lab import guard_replay

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
            ceilings: dict[str, str] | None = None, guards: dict[str, Any] | None = None) -> dict[str, Any]:
    """The comparison as a JSON-ready mapping (see the module docstring); the goals need the arms' roles: the
    spurious-reward control, the label-free arms and the demo's arm. `ceilings`: arm -> the arm its fraction of the
    oracle is taken against instead of `oracle` (the goals always read `oracle`). `guards`: arm -> the guard config
    its long run is replayed under (lab/guard_replay.py; default: the guard's defaults)."""
    if not lines:
        return {"arms": [], "suites": [], "cells": [], "missing_control": False, "cost": cost([])}
    controls = {l["seed"]: l for l in lines if l["arm"] == control}
    suites = sorted({s for l in lines for s in l["suites"]})
    split = {s: next(l["suites"][s].get("split", "eval") for l in lines if s in l["suites"]) for s in suites}
    reported = [s for s in suites if split[s] == "test"] or suites
    chosen = [s for s in suites if split[s] == "validation"]  # what goals and rankings read
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
        "control": control, "oracle": oracle, "suites": suites, "reported": reported, "chosen_on": chosen, "splits": split,
        "arms": [{"arm": a, "seeds": sorted(l["seed"] for l in by_arm[a]),
                  "seconds": statistics.fmean(sum(l["phase_seconds"].values()) for l in by_arm[a]),
                  "signal": {k: statistics.fmean(l["signal"][k] for l in by_arm[a] if k in l.get("signal", {}))
                             for k in {k for l in by_arm[a] for k in l.get("signal", {})}},
                  "commits": sorted({l.get("commit") or "?" for l in by_arm[a]}),
                  "curves": {s: [l["suites"][s]["curve"] for l in by_arm[a] if s in l["suites"]] for s in suites}}
                 for a in arms],
        "cells": sorted(out_cells, key=lambda c: (arms.index(c["arm"]), c["suite"])),
        "missing_control": not controls,
        "goals": goals(cells, lines, chosen, reported, oracle, spurious, list(label_free or ()), demo),
        "cost": cost(lines),
        "signal_cost": signal_cost(lines),
        "guard": guard_replay.section(lines, reported, guards),
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


def signal_cost(lines: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per arm that rolls out or judges: the mean over its pieces of the rollout's and the judge's seconds per
    iteration (phase seconds / iterations), what its reward signal costs beside another's (self-certainty and entropy
    are recorded while sampling, the vote and the LLM judge are computed in the judge phase)."""
    out: dict[str, dict[str, list[float]]] = {}
    for line in lines:
        phases, n = line.get("phase_seconds") or {}, int(line.get("iterations") or 0)
        if n and ("rollout" in phases or "judge" in phases):
            mine = out.setdefault(line["arm"], {"rollout": [], "judge": []})
            for phase in mine:
                mine[phase].append(float(phases.get(phase, 0.0)) / n)
    return {arm: {p: round(statistics.fmean(v), 1) for p, v in phases.items()} for arm, phases in out.items()}


def _ci(interval: tuple[float, float, float] | None) -> str:
    return "none" if interval is None else f"{_pts(interval[0])} ({_pts(interval[1])}, {_pts(interval[2])})"


def _primary(suites: list[str], phrasing: dict[str, str]) -> list[str]:
    """The suites a goal reads: those in wordings never trained on when there are any, else all of them."""
    return [s for s in suites if phrasing.get(s) == "unseen"] or suites


def _p(cell: Cell, minus: Cell) -> tuple[tuple[float, float, float] | None, float]:
    """The pooled paired difference cell - minus, and its two-sided p-value."""
    pooled = cell.pooled(minus=minus)
    if pooled is None:
        return None, 1.0
    mean, low, high = pooled
    return pooled, two_sided_p(mean, (high - low) / (2 * Z95))


def _ratio(cell: Cell | None, top: Cell | None) -> tuple[float | None, float | None, float | None, float]:
    if cell is None or top is None:
        return None, None, None, 1.0
    return bootstrap_ratio(cell.diffs, top.diffs)


def _mean(cell: Cell) -> float:
    """A cell's pooled gain (0 where it has no paired items)."""
    pooled = cell.pooled()
    return pooled[0] if pooled is not None else 0.0


def _fmt_ratio(r: tuple[float | None, float | None, float | None, float]) -> str:
    ratio, low, high, undefined = r
    if ratio is None:
        return "no ratio (the oracle gains nothing)"
    text = f"{ratio:.2f}" + (f" ({low:.2f}, {high:.2f})" if low is not None else "")
    return text + (f", {100 * undefined:.0f} % of draws without an oracle gain" if undefined >= 0.005 else "")


def goals(cells: dict[tuple[str, str], Cell], lines: list[dict[str, Any]], chosen: list[str], reported: list[str],
          oracle: str | None, spurious: str | None, label_free: list[str], demo: str | None) -> list[dict[str, Any]]:
    """The efficacy lab's goals, each {"goal", "met" (true, false, or null: not measurable from these lines), "why",
    "split", "test"}: marked on the `chosen` (validation) suites, which decisions may read; "test" gives the same
    figures on the `reported` (test) suites beside, never used to mark or rank. Gains are pooled over the seeds; a
    goal is met only on at least SEEDS_FOR_A_CLAIM seeds. Claims are paired comparisons with their intervals: an arm
    against the shuffled-reward control on the same items and seeds (Holm-adjusted over the label-free arms compared),
    an arm's share of the oracle's gain with a bootstrap interval over seeds and items."""
    phrasing = {s: next(l["suites"][s].get("phrasing", "seen") for l in lines if s in l["suites"]) for s in chosen + reported}

    def enough(cell: Cell | None) -> bool:
        return cell is not None and len(cell.gains) >= SEEDS_FOR_A_CLAIM

    def on(suites: list[str]) -> dict[str, Any]:
        """Every goal's (met, why) on `suites`."""
        primary = _primary(suites, phrasing)
        out: dict[str, Any] = {}
        run = [a for a in label_free if all((a, s) in cells for s in primary)]
        # 1. The gain is the reward's: each label-free arm against the shuffled control, paired, Holm over the arms.
        if not spurious or not run or any((spurious, s) not in cells for s in primary):
            out["reward"] = (None, "needs the spurious-reward arm (lab file: spurious) and the label-free arms, run")
        else:
            tests = {(a, s): _p(cells[(a, s)], cells[(spurious, s)]) for a in run for s in primary}
            adjusted = holm({f"{a}|{s}": p for (a, s), (_, p) in tests.items()})
            beyond = {a: all((d := tests[(a, s)][0]) is not None and d[0] > 0 and adjusted[f"{a}|{s}"] < 0.05
                             for s in primary) for a in run}
            measured = all(enough(cells[(a, s)]) and enough(cells[(spurious, s)]) for a in run for s in primary)
            target = [demo] if demo in run else run
            met = (all(beyond[a] for a in target) if demo in run else any(beyond.values())) if measured else None
            out["reward"] = (met, "; ".join(
                f"{a} - {spurious} on {s}: {_ci(tests[(a, s)][0])}, Holm-adjusted p {adjusted[f'{a}|{s}']:.3f}"
                for a in run for s in primary) + f" ({len(tests)} comparisons)")
        # 2. The oracle gains beyond the noise on every seed.
        found = [cells.get((oracle, s)) for s in primary] if oracle else []
        ceiling = [c for c in found if c is not None]
        if not ceiling or len(ceiling) < len(found):
            out["oracle"] = (None, "no oracle arm run")
        else:
            out["oracle"] = (all(c.beyond_noise == len(c.gains) for c in ceiling) if all(enough(c) for c in ceiling) else None,
                             "; ".join(f"{s}: beyond noise on {c.beyond_noise} of {len(c.gains)} seeds, pooled {_ci(c.pooled())}"
                                       for s, c in zip(primary, ceiling)))
        # 3. A label-free arm reaches half the oracle's gain: the bootstrap interval's lower bound at least 0.5.
        if not ceiling or len(ceiling) < len(found) or not run:
            out["half"] = (None, "needs the oracle and the label-free arms (lab file: label_free)")
        else:
            ratios = {(a, s): _ratio(cells[(a, s)], top) for a in run for s, top in zip(primary, ceiling)}
            reached = [a for a in run if all((low := ratios[(a, s)][1]) is not None and low >= 0.5 for s in primary)]
            measured = all(enough(cells[(a, s)]) for a in run for s in primary)
            out["half"] = (bool(reached) if measured else None, "; ".join(
                f"{a} on {s}: {_fmt_ratio(ratios[(a, s)])} of the oracle" for a in run for s in primary)
                + f" ({len(run)} arm{'s' * (len(run) != 1)} compared)")
        # 4. No arm's promoted final policy is worse than its start beyond the noise.
        worse = [f"{c.arm} on {c.suite} (seeds {c.promoted_worse})" for c in cells.values() if c.suite in suites and c.promoted_worse]
        out["worse"] = (not worse, "; ".join(worse) or "none")
        # 5. The demo's arm is the best label-free arm (by its pooled gain); an arm on fewer seeds is not ranked.
        first = primary[0]
        ranked_arms = [a for a in run if enough(cells[(a, first)])]
        short = [a for a in run if a not in ranked_arms]
        ranked = sorted(((round(_mean(cells[(a, first)]), 9), a == demo, a) for a in ranked_arms), reverse=True)
        pending = f"; not ranked yet (fewer than {SEEDS_FOR_A_CLAIM} seeds): {', '.join(short)}" if short else ""
        if not demo or (demo, first) not in cells:
            out["demo"] = (None, "needs the demo's arm (lab file: demo)")
        elif demo in short or not ranked:
            out["demo"] = (None, f"the demo's arm {demo} is not on {SEEDS_FOR_A_CLAIM} seeds yet" + pending)
        else:
            # Best: no other arm beats it beyond the noise, paired, Holm-adjusted over the arms it is compared with
            # (the top of a ranking by point estimates is one pick among many).
            others = [a for _, _, a in ranked if a != demo]
            versus = {a: _p(cells[(a, first)], cells[(demo, first)]) for a in others}
            against = holm({a: p for a, (_, p) in versus.items()}) if versus else {}
            beats = [a for a in others if (d := versus[a][0]) is not None and d[0] > 0 and against[a] < 0.05]
            order = " > ".join(f"{a} {_pts(g)}" for g, _, a in ranked)
            out["demo"] = (not beats, f"on {first}: {order}; " + ("; ".join(
                f"{a} - {demo}: {_ci(versus[a][0])}, Holm-adjusted p {against[a]:.3f}" for a in others)
                or "no other arm") + f" ({len(others)} comparison{'s' * (len(others) != 1)})"
                + (f": beaten beyond the noise by {', '.join(beats)}" if beats else "") + pending)
        return out

    names = {"reward": "the gain is the reward's: the label-free arm beats the shuffled control, paired",
             "oracle": "oracle beyond noise on every seed",
             "half": "a label-free arm reaches half the oracle's gain (bootstrap lower bound >= 0.5)",
             "worse": "no promoted final policy worse than its start beyond noise",
             "demo": "the demo is the best label-free arm (no arm beats it beyond the noise)"}
    if not chosen:
        return [{"goal": text, "met": None, "split": "validation", "test": "",
                 "why": "no validation suite (split: validation): goals are marked only where decisions may read"}
                for text in names.values()]
    marked, beside = on(chosen), on(reported) if reported else {}
    return [{"goal": names[k], "met": marked[k][0], "why": marked[k][1], "split": "validation",
             "test": "" if k not in beside else f"{ {True: 'met', False: 'not met', None: 'not measured'}[beside[k][0]] }: {beside[k][1]}"}
            for k in names]


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
    lines += ["", f"Goals, marked on the validation split ({', '.join(result.get('chosen_on') or []) or 'none'}); the test "
              "split's figures beside them were not used to mark or rank:"]
    lines += [f"- {g['goal']}: **{marks[g['met']]}** ({g['why']})" + (f"; on test: {g['test']}" if g.get("test") else "")
              for g in result.get("goals", [])]
    guard = guard_replay.markdown(result["guard"]) if result.get("guard") else ""
    if guard:
        lines += ["", guard.rstrip("\n")]
    spent = result.get("cost")
    if spent and spent["pieces"]:
        top = spent["longest"]
        lines += ["", f"Cost: {spent['pieces']} pieces, {spent['machine_seconds']:.0f} s of machine time "
                  f"({spent['machine_seconds'] / 3600:.1f} h; the longest, {top['arm']}/{top['seed']}, {top['seconds']:.0f} s); "
                  + ", ".join(f"{p} {100 * v['share']:.0f} %" for p, v in spent["phases"].items() if v["share"] >= 0.005)]
    if result.get("signal_cost"):
        lines += ["", "Seconds per iteration of rollout + judge (what each arm's signal costs), mean over its pieces: "
                  + ", ".join(f"{arm} {v['rollout']:.0f} + {v['judge']:.0f}" for arm, v in result["signal_cost"].items())]
    return "\n".join(lines) + "\n"


def readme_table(result: dict[str, Any]) -> str:
    """The short table a README holds: per arm (the control left out), its pooled gain with the 95 % interval and its
    seeds beyond the noise, on the validation suites (what decisions read) and then on the test suites."""
    if result.get("missing_control") or not result["cells"]:
        return "No finished control arm yet, nothing to compare.\n"
    suites = list(result.get("chosen_on") or []) + list(result["reported"])
    split = result.get("splits", {})
    head = "| arm | " + " | ".join(f"{s} ({'validation' if split.get(s) == 'validation' else split.get(s, '')})"
                                  for s in suites) + " |"
    lines = [head, "|" + "---|" * (len(suites) + 1)]
    cells = {(c["arm"], c["suite"]): c for c in result["cells"]}
    for arm in result["arms"]:
        if arm["arm"] == result["control"]:
            continue
        row = [f"{arm['arm']} ({len(arm['seeds'])} seed{'s' * (len(arm['seeds']) != 1)})"]
        for s in suites:
            c = cells.get((arm["arm"], s))
            row.append("" if c is None or not c.get("pooled") else
                       f"{_pts(c['pooled']['gain'])} ({_pts(c['pooled']['ci95'][0])}, {_pts(c['pooled']['ci95'][1])}) "
                       f"[{c['beyond_noise']}/{len(c['seeds'])}]")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def provenance_note(lines: list[dict[str, Any]]) -> str:
    """Which commits the lines come from, and how many ran from a dirty tree (said, not hidden)."""
    commits = sorted({l.get("commit") or "?" for l in lines})
    dirty = [l for l in lines if str(l.get("commit") or "").endswith("+dirty")]
    recorded = sum(1 for l in lines if l.get("config_sha256"))
    return (f"{len(lines)} results lines from {len(commits)} commit(s); {len(dirty)} ran from a tree with uncommitted "
            f"changes (+dirty: not reproducible from their commit alone); {recorded} record their config's hash, "
            "versions, CPU and model checksum.")


MARKER = "<!-- lab-report:{name}:{style}:{end} -->"
STYLES = ("full", "readme")


def generated_block(name: str, style: str, result: dict[str, Any], lines: list[dict[str, Any]], command: str) -> str:
    """What `selfloop lab report --update FILE` writes between a lab's markers in FILE."""
    body = markdown(name, result) if style == "full" else readme_table(result)
    return (f"<!-- generated by `{command}` from the lab's results lines: do not edit by hand -->\n\n"
            f"{body}\n{provenance_note(lines)}\n")


def _constant(text: str) -> Callable[[re.Match[str]], str]:
    """A replacement for re.sub that puts `text` in as it is (no backslash or group escapes read in it)."""
    return lambda _: text


def update_docs(path: Path, name: str, result: dict[str, Any], lines: list[dict[str, Any]], command: str) -> int:
    """Rewrite every block of lab `name` in the file at `path` (between MARKER start and end, in either style);
    return how many were rewritten."""
    text = path.read_text(encoding="utf-8")
    count = 0
    for style in STYLES:
        start, end = MARKER.format(name=name, style=style, end="start"), MARKER.format(name=name, style=style, end="end")
        pattern = re.compile(re.escape(start) + r"\n.*?" + re.escape(end), re.S)
        if not pattern.search(text):
            continue
        text, n = pattern.subn(_constant(f"{start}\n{generated_block(name, style, result, lines, command)}{end}"), text)
        count += n
    if count:
        path.write_text(text, encoding="utf-8")
    return count


def write_report(name: str, result: dict[str, Any], out: Path) -> Path:
    """report.json, report.md and index.html (the lab at a glance: bars of each arm's gain with its interval per
    suite, each arm's mean curve with its spread, the arms and the goals as tables; opens offline: plotly.min.js is
    copied beside it)."""
    from selfloop.output_dir import write_folder
    from selfloop.plots import plotly_js

    write_folder(out, {"report.json": json.dumps(result, indent=1, sort_keys=True),
                       "report.md": f"# Lab {name}\n\n{markdown(name, result)}", "plotly.min.js": plotly_js(),
                       "index.html": html_page(name, result)})
    return out / "index.html"


STYLE = """body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1360px;padding:0 16px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}.muted{color:#666}.chart{min-height:380px;margin:12px 0}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border-bottom:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.met{color:#17803d;font-weight:600}.not-met{color:#b3261e;font-weight:600}.unmeasured{color:#666}"""
MET = {True: ("met", "met"), False: ("not met", "not-met"), None: ("not measured", "unmeasured")}


def html_page(name: str, result: dict[str, Any]) -> str:
    """The offline page: every name and figure escaped (HTML text, or JSON escapes inside the script)."""
    from selfloop.plots import lab_figures

    charts = lab_figures(result)
    control = _escape(str(result.get("control")))
    rows = "".join(
        f"<tr><td>{_escape(c['arm'])}</td><td>{_escape(c['suite'])}</td><td class=n>{len(c['seeds'])}</td>"
        f"<td class=n>{_pts(c['mean_gain'])} ({100 * c['sd_gain']:.1f})</td><td class=n>{c['beyond_noise']}/{len(c['seeds'])}</td>"
        f"<td class=n>{_ci_cell(c.get('pooled'))}</td>"
        f"<td class=n>{'' if c.get('fraction_of_oracle') is None else format(c['fraction_of_oracle'], '.2f')}</td></tr>"
        for c in result.get("cells", []) if c.get("reported") and c["arm"] != result.get("control"))
    goals = "".join(
        f"<tr><td>{_escape(g['goal'])}</td><td class={MET[g['met']][1]}>{MET[g['met']][0]}</td>"
        f"<td>{_escape(g['why'])}</td><td class=muted>{_escape(g.get('test', ''))}</td></tr>" for g in result.get("goals", []))
    spent = result.get("cost") or {}
    cost = (f"<p class=muted>Cost: {spent['pieces']} finished pieces, {spent['machine_seconds']:.0f} s of machine time; the "
            f"longest {_escape(spent['longest']['arm'])}/{spent['longest']['seed']}, {spent['longest']['seconds']:.0f} s.</p>"
            if spent.get("pieces") else "")
    guard = _guard_table(result.get("guard") or {})
    divs = "".join(f'<div class="chart" id="{_escape(c["id"])}"></div>' for c in charts)
    draw = "".join(f"Plotly.newPlot({script_json(c['id'])}, {script_json(c['figure']['data'])}, "
                   f"{script_json(c['figure']['layout'])}, {{displaylogo: false, responsive: true}});\n" for c in charts)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>lab {_escape(name)}</title>
<style>{STYLE}</style><script src="plotly.min.js"></script></head><body>
<h1>Lab {_escape(name)}</h1>
<p class=muted>Each arm's final policy against the control ({control}) on the same held-out items of the reported
suites, in points: pooled over seeds with the paired 95 % interval, the mean over seeds (sd), and the seeds whose own
interval is beyond the noise.</p>
{divs}
<h2>Arms</h2><table id="lab-arms"><thead><tr><th>arm</th><th>suite</th><th>seeds</th><th>mean gain (sd)</th>
<th>beyond noise</th><th>pooled (95 % interval)</th><th>fraction of the oracle</th></tr></thead><tbody>{rows}</tbody></table>
<h2>Goals</h2><p class=muted>Marked on the validation split ({_escape(", ".join(result.get("chosen_on") or []) or "none")}),
which decisions may read; the test split's figures beside them were not used to mark or rank.</p>
<table id="lab-goals"><thead><tr><th>goal</th><th>result (validation)</th><th>why</th><th>on test</th></tr></thead>
<tbody>{goals}</tbody></table>
{guard}{cost}
<script>
{draw}</script></body></html>"""


def _guard_table(block: dict[str, Any]) -> str:
    """The guard replayed over the long arms (lab/guard_replay.py) as an HTML table; empty without such arms."""
    if not block.get("rows"):
        return ""
    suites = block["suites"]
    head = "".join(f"<th>{_escape(s)}: start / kept / best (at) / gate</th><th>regret kept, gate</th>" for s in suites)
    body = ""
    for r in block["rows"]:
        cells = ""
        for s in suites:
            v = r["suites"].get(s)
            cells += ("<td></td><td></td>" if v is None else
                      f"<td class=n>{guard_replay.policies(v)}</td><td class=n>{guard_replay.regrets(v)}"
                      + (" (collapsed)" if v["collapsed"] else "") + "</td>")
        kept = "start" if r["kept"] is None else f"iteration {r['kept']}"
        body += (f"<tr><td>{_escape(r['arm'])}</td><td class=n>{r['seed']}</td><td class=n>{r['fired_at'] or ''}</td>"
                 f"<td>{_escape(r['rule'] or '')}</td><td>{kept}</td>{cells}</tr>")
    return ("<h2>The collapse guard, replayed</h2><p class=muted>Each long arm's monitors replayed through the guard; "
            "the policy it keeps against the best on test (measured against, never chosen by) and the labelled gate's, "
            "in percent; regrets in points.</p><table id=\"lab-guard\"><thead><tr><th>arm</th><th>seed</th>"
            f"<th>fired after</th><th>rule</th><th>kept</th>{head}</tr></thead><tbody>{body}</tbody></table>\n")


def _ci_cell(pooled: dict[str, Any] | None) -> str:
    if not pooled:
        return ""
    low, high = pooled["ci95"]
    return f"{_pts(pooled['gain'])} ({_pts(low)}, {_pts(high)})"


def script_json(value: Any) -> str:
    """JSON to put inside a <script> element: no '<', '>' or '&' (an arm named `</script><script>...` would end
    the element and run), nor the two line separators JavaScript reads as line ends."""
    return (json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)

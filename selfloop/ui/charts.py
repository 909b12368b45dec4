"""Plotly figures (plain JSON: data and layout) of a loop's history, for the dashboard and the report.

Both draw the same figures from the same `Segment`s, so the two never disagree. Conventions:
- x is an iteration number on one axis per chart: the page's loop's own numbers, which the iteration
  table shows; 0 is the policy it started from, and an ancestor's curve up to the fork sits at x <= 0.
- held-out metrics carry their confidence band (`evals.ci_low`/`ci_high`) and a marker per
  iteration: promoted (green triangle), rejected (red cross), undecided (grey dot).
- training loss is drawn per step with a break and a dotted line between iterations, so iterations
  never join into one line.
"""

from __future__ import annotations

from typing import Any

from selfloop.db.dashboard import Segment
from selfloop.plots import Colours, figure, rgba

DECISIONS = {True: ("promoted", "triangle-up", "#2ca02c"), False: ("rejected", "x", "#d62728"),
             None: ("no decision yet", "circle", "#888888")}
MAX_BOUNDARY_LABELS = 12
STARTING = ("the policy it started from", "diamond", "#555555")

# (chart id, title, y axis, metric names): figures from the per-iteration `metrics` table.
METRIC_CHARTS = [
    ("judge_score", "Mean LLM-judge score", "score (0-5)", ["judge.mean_score"]),
    ("vote", "Vote share and label/reward accuracy", "share",
     ["judge.vote_share", "judge.label_accuracy", "judge.reward_accuracy", "judge.rewarded_right",
      "judge.llm_pick_accuracy"]),
    ("calibration", "LLM judge against verified correctness", "share",
     ["judge.llm_auc", "judge.llm_pair_accuracy", "judge.valid_mass"]),
    ("length", "Mean response length", "tokens", ["drift.mean_response_tokens"]),
    ("collapse", "Collapse monitors: diversity, answer entropy, duplicates, KL from the start", "value",
     ["drift.distinct_2", "drift.answer_entropy", "drift.duplicate_share", "drift.kl_from_start", "guard.fired"]),
]


def _label(seg: Segment, name: str, compare: bool) -> str:
    if compare:
        return f"{seg.loop}: {name}"
    return name if seg.own else f"{name} ({seg.loop}, before the fork)"


def _fork_marks(segments: list[Segment]) -> tuple[list[dict], list[dict]]:
    """A dotted line at each fork point (where an ancestor's curve hands over to the next loop)."""
    shapes, notes = [], []
    for before, after in zip(segments, segments[1:]):
        if before.until is None:
            continue
        x = before.until + before.shift
        shapes.append({"type": "line", "x0": x, "x1": x, "yref": "paper", "y0": 0, "y1": 1,
                       "line": {"color": "#999", "width": 1, "dash": "dot"}})
        notes.append({"x": x, "yref": "paper", "y": 1, "text": f"fork: {after.loop}", "showarrow": False,
                      "font": {"size": 10}, "xanchor": "left", "yanchor": "top"})
    return shapes, notes


def eval_charts(segments: list[Segment], xtitle: str, compare: bool = False) -> list[dict[str, Any]]:
    """One chart per held-out suite, every metric of it with its band and decision markers."""
    suites: dict[str, list[str]] = {}
    for seg in segments:
        for key in seg.evals:
            suite, metric = key.split("/", 1)
            if not metric.endswith("accuracy"):  # accuracies share a 0-1 axis; other figures (lengths) do not
                continue
            if metric not in suites.setdefault(suite, []):
                suites[suite].append(metric)
    colours, charts = Colours(), []
    shapes, notes = ([], []) if compare else _fork_marks(segments)
    for suite, metrics in sorted(suites.items()):
        data: list[dict[str, Any]] = []
        for seg in segments:
            for metric in sorted(metrics):
                points = seg.evals.get(f"{suite}/{metric}")
                if not points:
                    continue
                colour = colours(f"{seg.loop}/{metric}" if compare else metric)
                xs = [p.iteration + seg.shift for p in points]
                label = _label(seg, metric, compare)
                banded = [p for p in points if p.ci_low is not None and p.ci_high is not None]
                if banded:
                    bx = [p.iteration + seg.shift for p in banded]
                    data.append({"type": "scatter", "x": bx, "y": [p.ci_high for p in banded], "mode": "lines",
                                 "line": {"width": 0}, "hoverinfo": "skip", "showlegend": False, "legendgroup": label})
                    data.append({"type": "scatter", "x": bx, "y": [p.ci_low for p in banded], "mode": "lines",
                                 "line": {"width": 0}, "fill": "tonexty", "fillcolor": rgba(colour, 0.15 if seg.own else 0.07),
                                 "hoverinfo": "skip", "name": f"{label} 95% CI", "showlegend": False, "legendgroup": label})
                decisions = [DECISIONS[seg.promoted[p.iteration]] if p.iteration in seg.promoted else STARTING for p in points]
                text = [f"{seg.loop} iteration {p.iteration}<br>{metric} {p.value:.3f}"
                        + (f" [{p.ci_low:.3f}, {p.ci_high:.3f}]" if p.ci_low is not None else "") + f" n={p.n}<br>{d[0]}"
                        for p, d in zip(points, decisions)]
                data.append({"type": "scatter", "x": xs, "y": [p.value for p in points], "mode": "lines+markers",
                             "name": label, "legendgroup": label, "text": text, "hovertemplate": "%{text}<extra></extra>",
                             "line": {"color": colour, "dash": "solid" if seg.own else "dash", "width": 2 if seg.own else 1.5},
                             "opacity": 1.0 if seg.own else 0.6,
                             "marker": {"symbol": [d[1] for d in decisions], "color": [d[2] for d in decisions], "size": 10,
                                        "line": {"color": colour, "width": 1}}})
        charts.append({"id": f"eval-{suite}", "title": f"Held-out {suite}",
                       "figure": figure(data, f"Held-out {suite}", xtitle, "accuracy", shapes=shapes, annotations=notes)})
    return charts


def metric_charts(segments: list[Segment], xtitle: str, judged: bool, compare: bool = False) -> list[dict[str, Any]]:
    """Judge score, vote share and accuracies, response length, collapse monitors. A loop whose judge has no LLM
    judge gets no judge-score or calibration chart at all; a chart whose figures have not landed yet says so."""
    colours, charts = Colours(), []
    shapes, notes = ([], []) if compare else _fork_marks(segments)
    for chart_id, title, ytitle, names in METRIC_CHARTS:
        if chart_id in ("judge_score", "calibration") and not judged:  # LLM-judge charts: none without an LLM judge
            continue
        data = []
        for seg in segments:
            for name in names:
                points = seg.metrics.get(name)
                if not points:
                    continue
                short = name.split(".", 1)[1]
                label = _label(seg, short, compare)
                colour = colours(f"{seg.loop}/{name}" if compare else name)
                data.append({"type": "scatter", "x": [i + seg.shift for i, _ in points], "y": [v for _, v in points],
                             "mode": "lines+markers", "name": label,
                             "text": [f"{seg.loop} iteration {i}<br>{short} {v:.4g}" for i, v in points],
                             "hovertemplate": "%{text}<extra></extra>",
                             "line": {"color": colour, "dash": "solid" if seg.own else "dash"}, "opacity": 1.0 if seg.own else 0.6})
        chart: dict[str, Any] = {"id": chart_id, "title": title}
        if data:
            chart["figure"] = figure(data, title, xtitle, ytitle, shapes=shapes, annotations=notes)
        else:
            chart["note"] = (f"{title}: nothing stored yet (these figures land when an iteration's judge phase ends; "
                             "a judge score needs at least one judgment the parser could read).")
        charts.append(chart)
    return charts


def loss_chart(segments: list[Segment], compare: bool = False) -> dict[str, Any]:
    """Loss per training step; x counts steps from the first segment's start (thinned evenly when long).
    Iteration boundaries are one dotted trace (cheap to draw for hundreds of iterations), labelled at
    most `MAX_BOUNDARY_LABELS` times."""
    colours = Colours()
    data: list[dict[str, Any]] = []
    boundaries: list[tuple[int, str]] = []
    origin = 0  # on a loop page an ancestor's steps come first and the loop's follow them
    for seg in segments:
        if not seg.steps:
            continue
        per_iteration: dict[int, int] = {}
        for number, step, _ in seg.steps:
            per_iteration[number] = max(per_iteration.get(number, 0), step + 1)
        starts, total = {}, 0 if compare else origin
        for number in sorted(per_iteration):
            starts[number], total = total, total + per_iteration[number]
        origin = total
        xs: list[int | None] = []
        ys: list[float | None] = []
        text: list[str] = []
        current = None
        for number, step, loss in seg.steps:
            if number != current:
                if current is not None:  # a gap: iterations never join into one line
                    xs.append(None)
                    ys.append(None)
                    text.append("")
                current = number
                if not compare:
                    boundaries.append((starts[number], f"it {number}" if seg.own else f"{seg.loop} it {number}"))
            xs.append(starts[number] + step)
            ys.append(loss)
            text.append(f"{seg.loop} iteration {number} step {step}<br>loss {loss:.4f}")
        data.append({"type": "scatter", "x": xs, "y": ys, "mode": "lines", "name": seg.loop, "connectgaps": False,
                     "text": text, "hovertemplate": "%{text}<extra></extra>",
                     "line": {"color": colours(seg.loop), "dash": "solid" if seg.own else "dash"}})
    thinned = any(s.total_steps > len(s.steps) for s in segments)
    title = "Training loss per step" + (" (long history thinned evenly)" if thinned else "")
    chart: dict[str, Any] = {"id": "loss", "title": title}
    if not data:
        chart["note"] = "Training loss: no training steps stored yet."
        return chart
    notes = []
    if boundaries:
        losses = [y for trace in data for y in trace["y"] if y is not None]
        low, high = min(losses), max(losses)
        bx, by = [], []
        for x, _ in boundaries:
            bx += [x, x, None]
            by += [low, high, None]
        data.insert(0, {"type": "scatter", "x": bx, "y": by, "mode": "lines", "hoverinfo": "skip", "showlegend": False,
                        "line": {"color": "#bbb", "width": 1, "dash": "dot"}})
        every = -(-len(boundaries) // MAX_BOUNDARY_LABELS)
        notes = [{"x": x, "yref": "paper", "y": 1, "text": label, "showarrow": False, "font": {"size": 9},
                  "xanchor": "left", "yanchor": "top"} for x, label in boundaries[::every]]
    xtitle = "training step from each loop's start" if compare else "training step (dotted lines: iteration boundaries)"
    chart["figure"] = figure(data, title, xtitle, "loss", annotations=notes)
    return chart


def loop_charts(segments: list[Segment], judged: bool, compare: bool = False) -> list[dict[str, Any]]:
    """Every chart of a loop page (or of a comparison): held-out suites, loss, judge and drift figures."""
    first = segments[-1] if not compare else segments[0]
    before = [s.loop for s in segments if not s.own]
    if compare:
        xtitle = f"iteration of {first.loop} (others placed where they forked from a common root)"
    else:
        xtitle = f"iteration of {first.loop} (0: its starting policy" + (f"; ≤ 0: {', '.join(before)} before the fork)" if before else ")")
    return [*eval_charts(segments, xtitle, compare), loss_chart(segments, compare),
            *metric_charts(segments, xtitle, judged, compare)]

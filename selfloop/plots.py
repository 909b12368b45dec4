"""Plotly figures as plain JSON (data and layout), below both the dashboard (`selfloop.ui`) and the lab's offline
report (`selfloop.lab.report`), so the two draw one look and neither imports the other: the figure frame every chart
uses, the colours, where plotly.min.js is, and the lab's figures.

Titles are `{"text": ...}` objects: the plotly.js that ships with the plotly package ignores a plain string.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from selfloop.errors import SelfloopError

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]
HEIGHT = 380


def plotly_js() -> Path:
    """plotly.min.js as the installed `plotly` package ships it."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise SelfloopError(f"the plotly package has no {path.name} (reinstall plotly)")
    return path


def rgba(colour: str, alpha: float) -> str:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


class Colours:
    """One colour per key, in the order keys are first asked for."""

    def __init__(self) -> None:
        self.assigned: dict[str, str] = {}

    def __call__(self, key: str) -> str:
        return self.assigned.setdefault(key, PALETTE[len(self.assigned) % len(PALETTE)])


def whole_ticks(data: list[dict[str, Any]]) -> dict[str, Any]:
    """Whole-number ticks (iterations, steps), at most about a dozen: a tick per iteration is slow to draw for
    hundreds, and Plotly's own choice puts ticks at halves."""
    xs = [x for trace in data for x in trace.get("x", []) if isinstance(x, (int, float))]
    span = (max(xs) - min(xs)) if xs else 1
    return {"tick0": 0, "dtick": max(1, -(-span // 12))}


def figure(data: list[dict[str, Any]], title: str, xtitle: str, ytitle: str, *, numeric_x: bool = True,
           **extra: Any) -> dict[str, Any]:
    """The figure of `data` with one look for every chart: a title, axis titles, a fixed height, the legend below;
    whole-number x ticks when x is a number (iterations, steps), categories otherwise."""
    xaxis = {"title": {"text": xtitle, "font": {"size": 12}}, "zeroline": False, "automargin": True,
             **(whole_ticks(data) if numeric_x else {"type": "category"})}
    return {"data": data, "layout": {
            "title": {"text": title, "font": {"size": 15}, "x": 0.01, "xanchor": "left"},
            "xaxis": xaxis, "yaxis": {"title": {"text": ytitle}, "automargin": True},
            "margin": {"l": 60, "r": 20, "t": 40, "b": 40}, "height": HEIGHT,
            "legend": {"orientation": "h", "yanchor": "top", "y": -0.22, "font": {"size": 11}},
            "hovermode": "closest", **extra}}


# -- the lab ------------------------------------------------------------------------------------------------------
def lab_figures(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The lab at a glance, from `selfloop.lab.report.compare`'s result: one bar chart of each arm's gain over the
    control per reported suite with its pooled 95 % interval (over items and seeds), and per reported suite one
    chart of each arm's mean curve over seeds with its spread (the seeds' range). Charts as the dashboard draws
    them: {id, title, figure}."""
    control, reported = result.get("control"), result.get("reported", [])
    arms = [a["arm"] for a in result.get("arms", [])]
    colours = Colours()
    for arm in arms:
        colours(arm)
    charts = []
    bars = []
    for suite in reported:
        cells = [c for c in result.get("cells", []) if c["suite"] == suite and c["arm"] != control and c.get("pooled")]
        if not cells:
            continue
        gains = [100 * c["pooled"]["gain"] for c in cells]
        bars.append({
            "type": "bar", "name": suite, "x": [c["arm"] for c in cells], "y": gains,
            "error_y": {"type": "data", "symmetric": False,
                        "array": [100 * c["pooled"]["ci95"][1] - g for c, g in zip(cells, gains)],
                        "arrayminus": [g - 100 * c["pooled"]["ci95"][0] for c, g in zip(cells, gains)]},
            "customdata": [[len(c["seeds"]), c["beyond_noise"]] for c in cells],
            "hovertemplate": "%{x}: %{y:+.1f} points (95% interval %{error_y.arrayminus:.1f} below, "
                             "%{error_y.array:.1f} above); %{customdata[0]} seed(s), %{customdata[1]} beyond the "
                             f"noise<extra>{suite}</extra>"})
    if bars:
        charts.append({"id": "lab-gains", "title": "gain over the control",
                       "figure": figure(bars, f"Gain over {control}, pooled over seeds (95 % interval)", "arm",
                                        "gain (points)", numeric_x=False, barmode="group")})
    for suite in reported:
        data = []
        for arm in result.get("arms", []):
            curves = [c for c in arm.get("curves", {}).get(suite, []) if c]
            if not curves:
                continue
            data += _mean_and_spread(arm["arm"], curves, colours(arm["arm"]))
        if data:
            charts.append({"id": f"lab-curve-{suite}", "title": f"accuracy per iteration on {suite}",
                           "figure": figure(data, f"Accuracy on {suite}: mean over seeds (band: range)", "iteration",
                                            "greedy accuracy")})
    return charts


def _mean_and_spread(arm: str, curves: list[list[float]], colour: str) -> list[dict[str, Any]]:
    """An arm's mean curve over its seeds, and the band between the lowest and highest seed at each iteration."""
    length = max(len(c) for c in curves)
    xs = list(range(1, length + 1))
    at = [[c[i] for c in curves if i < len(c) and c[i] is not None and math.isfinite(c[i])] for i in range(length)]
    mean = [statistics.fmean(v) if v else None for v in at]
    low = [min(v) if v else None for v in at]
    high = [max(v) if v else None for v in at]
    seeds = f"{len(curves)} seed{'s' if len(curves) > 1 else ''}"
    band = [] if len(curves) < 2 else [
        {"type": "scatter", "mode": "lines", "x": xs, "y": low, "line": {"width": 0}, "hoverinfo": "skip",
         "showlegend": False, "legendgroup": arm},
        {"type": "scatter", "mode": "lines", "x": xs, "y": high, "line": {"width": 0}, "fill": "tonexty",
         "fillcolor": rgba(colour, 0.15), "hoverinfo": "skip", "showlegend": False, "legendgroup": arm}]
    return band + [{"type": "scatter", "mode": "lines+markers", "x": xs, "y": mean, "name": f"{arm} ({seeds})",
                    "legendgroup": arm, "line": {"color": colour},
                    "hovertemplate": f"{arm}, iteration %{{x}}: %{{y:.3f}} (mean of {seeds})<extra></extra>"}]

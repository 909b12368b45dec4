"""`selfloop report`: PNG plots of a loop's history and a small HTML page that shows them with the
iteration table. A forked loop is drawn after its ancestors' curves up to each fork point, so its
lineage reads as one timeline (x = iterations since the root loop's start).
"""

from __future__ import annotations

import html
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from selfloop.db.models import Eval, Event, Iteration, Loop, Metric, TrainStep
from selfloop.db.queries import iteration_summary, loop_by_name
from selfloop.errors import SelfloopError
from selfloop.private import private_dir


@dataclass
class Series:
    loop: str
    offset: int  # iterations of ancestors before this loop's first iteration
    until: int | None  # only iterations <= until (ancestors, up to the fork point); None: all
    iterations: list[int] = field(default_factory=list)
    metrics: dict[str, dict[int, float]] = field(default_factory=dict)  # name -> iteration -> value
    steps: list[tuple[int, int, float]] = field(default_factory=list)  # (iteration, step, loss)


PLOTS = [
    ("accuracy.png", "Held-out accuracy", "accuracy", lambda name: name.startswith("eval.") and name.endswith("accuracy")),
    ("judge_score.png", "Mean LLM-judge score", "score (0-5)", lambda name: name == "judge.mean_score"),
    ("response_length.png", "Mean rollout length", "tokens", lambda name: name == "drift.mean_response_tokens"),
    ("vote_share.png", "Majority vote share", "share", lambda name: name == "judge.vote_share"),
]


def _lineage(session: Session, loop: Loop) -> list[tuple[Loop, int | None]]:
    """[(root, fork point), ..., (loop, None)]: each ancestor with the iteration its child forked at."""
    chain: list[tuple[Loop, int | None]] = [(loop, None)]
    while chain[0][0].parent_loop_id is not None:
        child = chain[0][0]
        chain.insert(0, (session.get(Loop, child.parent_loop_id), child.parent_iteration))
    return chain


def collect(session: Session, name: str) -> tuple[list[Series], list[str], list[tuple], list[tuple]]:
    loop = loop_by_name(session, name)
    if loop is None:
        raise SelfloopError(f"no loop named {name!r}")
    series, offset = [], 0
    for member, until in _lineage(session, loop):
        s = Series(member.name, offset, until)
        its = session.execute(select(Iteration.id, Iteration.number).where(Iteration.loop_id == member.id)
                              .order_by(Iteration.number)).all()
        for iteration_id, number in its:
            if until is not None and number > until:
                continue
            s.iterations.append(number)
            for suite, metric, role, value in session.execute(select(Eval.suite, Eval.metric, Eval.role, Eval.value)
                                                              .where(Eval.iteration_id == iteration_id)):
                if metric.endswith("accuracy"):
                    key = f"eval.{suite}/{metric}"
                    if role == "candidate":
                        s.metrics.setdefault(key, {})[number] = value
                    elif number == 1 and member.parent_loop_id is None:  # the base model, before any training
                        s.metrics.setdefault(key, {})[0] = value
            for metric_name, value in session.execute(select(Metric.name, Metric.value).where(Metric.iteration_id == iteration_id)):
                s.metrics.setdefault(metric_name, {})[number] = value
            s.steps += [(number, step, loss) for step, loss in session.execute(
                select(TrainStep.step, TrainStep.loss).where(TrainStep.iteration_id == iteration_id).order_by(TrainStep.step))]
        series.append(s)
        offset += until if until is not None else 0
    columns, rows = iteration_summary(session, name)
    events = session.execute(select(Event.created_at, Event.level, Event.kind, Event.message)
                             .where(Event.loop_id == loop.id, Event.level != "info").order_by(Event.id)).all()
    return series, columns, rows, [tuple(e) for e in events]


@contextmanager
def _figure(path: Path, title: str, xlabel: str, ylabel: str, empty: str):
    """One headless figure saved to `path`; the body draws on the axes and sets `state["drawn"]`."""
    import matplotlib

    matplotlib.use("Agg")  # reports are written by daemons on machines without a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    state = {"drawn": False}
    try:
        yield ax, state
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if state["drawn"]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def _plot(series: list[Series], path: Path, title: str, ylabel: str, wanted) -> bool:  # noqa: ANN001
    from matplotlib.ticker import MaxNLocator

    xlabel = "iteration (0: base model)" if "accuracy" in path.name else "iteration"
    with _figure(path, title, xlabel, ylabel, "no data yet") as (ax, state):
        _draw_metric(ax, state, series, wanted)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return state["drawn"]


def _draw_metric(ax, state: dict, series: list[Series], wanted) -> None:  # noqa: ANN001
    for k, s in enumerate(series):
        own = k == len(series) - 1
        for name in sorted(n for n in s.metrics if wanted(n)):
            points = sorted(s.metrics[name].items())
            if not points:
                continue
            xs = [s.offset + i for i, _ in points]
            label = name.removeprefix("eval.").replace("judge.", "").replace("drift.", "")
            ax.plot(xs, [v for _, v in points], marker="o", linestyle="-" if own else "--", alpha=1.0 if own else 0.5,
                    label=label if own else f"{label} ({s.loop}, before the fork)")
            state["drawn"] = True
    if len(series) > 1:
        fork_x = series[-1].offset
        ax.axvline(fork_x, color="grey", linewidth=0.8, linestyle=":")
        ax.annotate(f"fork: {series[-1].loop}", (fork_x, ax.get_ylim()[1]), fontsize=8, va="top")


def _plot_loss(series: list[Series], path: Path) -> bool:
    # Steps of iteration i spread over [i-1, i) so the x axis lines up with the metric plots.
    with _figure(path, "Training loss per step", "iteration (steps spread across it)", "loss",
                 "no training steps yet") as (ax, state):
        for k, s in enumerate(series):
            if not s.steps:
                continue
            per_iteration = max(step for _, step, _ in s.steps) + 1
            xs = [s.offset + (i - 1) + step / per_iteration for i, step, _ in s.steps]
            own = k == len(series) - 1
            ax.plot(xs, [loss for _, _, loss in s.steps], linestyle="-" if own else "--",
                    alpha=1.0 if own else 0.5, label=s.loop)
            state["drawn"] = True
    return state["drawn"]


def write_report(session: Session, name: str, out: Path) -> Path:
    from selfloop.render import _cell

    series, columns, rows, events = collect(session, name)
    private_dir(out)
    images = []
    for filename, title, ylabel, wanted in PLOTS:
        _plot(series, out / filename, title, ylabel, wanted)
        images.append((filename, title))
    _plot_loss(series, out / "train_loss.png")
    images.insert(1, ("train_loss.png", "Training loss"))
    lineage = " &rarr; ".join(html.escape(f"{s.loop} (to iteration {s.until})" if s.until else s.loop) for s in series)
    table = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in rows)
    warnings = "".join(f"<li><b>{html.escape(kind)}</b> ({html.escape(level)}): {html.escape(message)}</li>"
                       for _, level, kind, message in events) or "<li>none</li>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>selfloop report: {html.escape(name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; }} td, th {{ border: 1px solid #ccc; padding: 3px 6px; }}
th {{ background: #f3f3f3; }} .plots img {{ width: 48%; min-width: 420px; margin: 0.5%; }}
</style></head><body>
<h1>selfloop report: {html.escape(name)}</h1>
<p>Lineage: {lineage}</p>
<div class="plots">{''.join(f'<img src="{f}" alt="{html.escape(t)}">' for f, t in images)}</div>
<h2>Iterations</h2>
<table><tr>{''.join(f'<th>{html.escape(c)}</th>' for c in columns)}</tr>{table}</table>
<h2>Warnings and decisions</h2><ul>{warnings}</ul>
</body></html>
"""
    index = out / "index.html"
    index.write_text(page)
    return index

"""A guard against the collapse of label-free training, from monitors that need no labels.

Every intrinsic reward studied in 2025 (URLVR, arXiv 2603.08660; "No free lunch", arXiv 2506.17219; 2505.21444)
first rises, then falls, sometimes suddenly and completely, as the policy sharpens onto one answer per question; the
step where it collapses shows in label-free statistics. After each iteration's evaluation the guard reads the loop's
per-iteration monitors (the `metrics` table: `drift.*`, `judge.vote_share`) and fires on the first rule that holds:

- collapse: the samples have lost their variety: the mean answer entropy is at or below `entropy_floor`, or the
  duplicate share at or above `duplicate_ceiling`, or distinct-2 has fallen below `diversity_floor` of its first
  iteration's value;
- fall: the label-free reward the loop trains on (`monitor`: vote share by default, or self-certainty) rose above
  its first iteration's value and has since fallen by more than `fall` below its peak, for `patience` iterations in
  a row;
- drift: the KL from the starting model per token is above `max_kl` (off unless set).

Its action (`action`): `rollback` makes the loop's policy the checkpoint of the last good iteration (the
monitor's peak before the fall, or the last iteration before the collapse) and pauses the loop; `pause` pauses it
where it is; `stop` finishes it. Every decision is an event (`guard.fired`, with the rule, the values and the
checkpoint kept) and a metric (`guard.fired` 1 on the iteration), which the dashboard marks and the trackers
receive. `selfloop resume LOOP --unpause` continues a paused loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Decision:
    rule: str  # collapse | fall | drift
    why: str
    kept: int | None  # the iteration (number) whose output is the last good policy; None: the loop's start
    values: dict[str, float] = field(default_factory=dict)


def decide(history: list[tuple[int, dict[str, float]]], cfg: Any) -> Decision | None:
    """The guard's decision after the last of `history` (iteration number, its monitors), or None. Pure: tested on
    hand-made histories."""
    if not history:
        return None
    number, now = history[-1]
    first = history[0][1]
    before = history[-2][0] if len(history) > 1 else None
    entropy, duplicates, diversity = (now.get("drift.answer_entropy"), now.get("drift.duplicate_share"),
                                      now.get("drift.distinct_2"))
    if entropy is not None and entropy <= cfg.entropy_floor:
        return Decision("collapse", f"iteration {number}: mean answer entropy {entropy:.3f} <= {cfg.entropy_floor}",
                        before, {"drift.answer_entropy": entropy})
    if duplicates is not None and duplicates >= cfg.duplicate_ceiling:
        return Decision("collapse", f"iteration {number}: duplicate share {duplicates:.3f} >= {cfg.duplicate_ceiling}",
                        before, {"drift.duplicate_share": duplicates})
    start_diversity = first.get("drift.distinct_2")
    if diversity is not None and start_diversity and diversity < cfg.diversity_floor * start_diversity:
        return Decision("collapse", f"iteration {number}: distinct-2 {diversity:.3f} below {cfg.diversity_floor} of "
                        f"iteration {history[0][0]}'s {start_diversity:.3f}", before, {"drift.distinct_2": diversity})
    fall = _fall(history, cfg)
    if fall is not None:
        return fall
    kl = now.get("drift.kl_from_start")
    if cfg.max_kl is not None and kl is not None and kl > cfg.max_kl:
        return Decision("drift", f"iteration {number}: KL from the start {kl:.3f} per token > {cfg.max_kl}", before,
                        {"drift.kl_from_start": kl})
    return None


def _fall(history: list[tuple[int, dict[str, float]]], cfg: Any) -> Decision | None:
    """The monitor rose above its first value, then fell more than `fall` below its peak for `patience` iterations."""
    series = [(n, m[cfg.monitor]) for n, m in history if cfg.monitor in m]
    if len(series) < 2:
        return None
    start = series[0][1]
    peak_at, peak = max(series, key=lambda p: (p[1], -p[0]))  # the first of the highest
    if peak <= start:
        return None  # it never rose: no rise-then-fall
    tail = [(n, v) for n, v in series if n > peak_at][-cfg.patience:]
    if len(tail) == cfg.patience and all(v < peak - cfg.fall for _, v in tail):
        number, value = series[-1]
        return Decision("fall", f"iteration {number}: {cfg.monitor} {value:.3f} has been more than {cfg.fall} below its "
                        f"peak {peak:.3f} (iteration {peak_at}) for {cfg.patience} iteration(s)", peak_at,
                        {cfg.monitor: value, f"{cfg.monitor}.peak": peak})
    return None

"""The collapse guard replayed over results lines (selfloop/lab/guard_replay.py), checked by hand: where it fires,
the policy it keeps, that policy's regret against the best on test and the labelled gate's."""

from __future__ import annotations

import pytest

from selfloop.config.evaluation import GuardConfig
from selfloop.lab import guard_replay
from selfloop.lab.report import compare, markdown


def _flags(right: int, n: int = 10) -> str:
    return "1" * right + "0" * (n - right)


def _line(arm: str, seed: int, shares: list[float], curve: list[float], final: int, start: int = 5,
          entropy: float = 1.0) -> dict:
    return {"lab": "t", "arm": arm, "seed": seed, "iterations": len(shares), "promoted": 1, "phase_seconds": {},
            "signal": {}, "monitors": [{"iteration": i + 1, "drift.vote_share": v, "drift.answer_entropy": entropy}
                                       for i, v in enumerate(shares)],
            "suites": {"val": {"start": _flags(start), "final": _flags(start), "curve": [], "split": "validation"},
                       "test": {"start": _flags(start), "final": _flags(final), "curve": curve, "split": "test"}}}


def test_a_rise_then_fall_keeps_the_peak_and_stops_a_collapsing_arm_in_time() -> None:
    # vote share 0.5 0.6 0.7 0.55 ...: after iteration 4 it is 0.15 below its peak (iteration 3) > fall 0.1
    line = _line("long", 0, [0.5, 0.6, 0.7, 0.55, 0.5, 0.4], [0.6, 0.7, 0.8, 0.6, 0.4, 0.3], final=3)
    row = guard_replay.replay_line(line, GuardConfig(), ["test"])
    assert (row["fired_at"], row["rule"], row["kept"]) == (4, "fall", 3)
    test = row["suites"]["test"]
    assert test["start"] == 0.5 and test["guard"] == pytest.approx(0.8) and test["best"] == pytest.approx(0.8)
    assert test["best_at"] == 3 and test["guard_regret"] == pytest.approx(0.0)
    assert test["gate"] == pytest.approx(0.3) and test["gate_regret"] == pytest.approx(0.5)
    assert test["collapsed"] is True and test["stopped_in_time"] is True


def test_no_decision_keeps_the_loops_end_and_a_collapse_rule_keeps_the_iteration_before() -> None:
    quiet = guard_replay.replay_line(_line("a", 0, [0.5, 0.5, 0.5, 0.5], [0.5, 0.6, 0.7, 0.65], final=6),
                                     GuardConfig(), ["test"])
    assert quiet["fired_at"] is None and quiet["kept"] == 4
    assert quiet["suites"]["test"]["guard"] == pytest.approx(0.65)
    assert quiet["suites"]["test"]["guard_regret"] == pytest.approx(0.05) and quiet["suites"]["test"]["collapsed"] is False
    # the answer entropy at the floor from the first iteration on: it fires after iteration 1 and keeps the start
    flat = _line("b", 0, [0.9, 0.9, 0.9, 0.9], [0.4, 0.3, 0.3, 0.2], final=5, entropy=0.01)
    row = guard_replay.replay_line(flat, GuardConfig(), ["test"])
    assert (row["fired_at"], row["rule"], row["kept"]) == (1, "collapse", None)
    assert row["suites"]["test"]["guard"] == 0.5 and row["suites"]["test"]["stopped_in_time"] is True
    # the same arm under a guard that looks for a lower floor never fires, and its collapse is not stopped
    late = guard_replay.replay_line(flat, GuardConfig(entropy_floor=0.001), ["test"])
    assert late["fired_at"] is None and late["suites"]["test"]["stopped_in_time"] is False


def test_the_report_marks_the_guard_goals_from_every_long_arm_and_skips_short_ones() -> None:
    control = {"lab": "t", "arm": "control", "seed": 0, "iterations": 1, "promoted": 0, "phase_seconds": {}, "signal": {},
               "suites": {"val": {"start": _flags(5), "final": _flags(5), "curve": [], "split": "validation"},
                          "test": {"start": _flags(5), "final": _flags(5), "curve": [], "split": "test"}}}
    good = _line("long", 0, [0.5, 0.6, 0.7, 0.55, 0.5, 0.4], [0.6, 0.7, 0.8, 0.6, 0.4, 0.3], final=3)
    # no decision: its end, 70, is 10 points below its best, 80: a regret of 10 > 2 points
    drifting = _line("long", 1, [0.5, 0.5, 0.5, 0.5], [0.6, 0.8, 0.7, 0.7], final=7)
    short = _line("short", 0, [0.5, 0.9, 0.1], [0.6, 0.6, 0.1], final=1)
    result = compare([control, good, drifting, short], "control", None)
    block = result["guard"]
    assert [(r["arm"], r["seed"]) for r in block["rows"]] == [("long", 0), ("long", 1)]
    assert block["max_regret"]["test"] == pytest.approx(0.1) and block["within_2_points"]["test"] is False
    assert block["collapsing"] == [{"arm": "long", "seed": 0, "suite": "test"}] and block["stopped_in_time"] is True
    text = markdown("t", result)
    assert "| long | 0 | 4 | fall | iteration 3 | 50.0 / 80.0 / 80.0 (3) / 30.0; 0.0, 50.0 (collapsed, stopped in time) |" in text
    assert "test **NOT met** (largest regret 10.0 points)" in text
    # lines without monitors (written before 2026-12-07) add nothing to the report
    assert "guard" not in markdown("t", compare([control, {**short, "monitors": []}], "control", None)).lower()


def test_the_offline_page_holds_the_guard_table_with_names_escaped() -> None:
    from selfloop.lab.report import html_page

    control = {"lab": "t", "arm": "control", "seed": 0, "iterations": 1, "promoted": 0, "phase_seconds": {}, "signal": {},
               "suites": {"test": {"start": _flags(5), "final": _flags(5), "curve": [], "split": "test"}}}
    long = _line("<b>long</b>", 0, [0.5, 0.6, 0.7, 0.55, 0.5, 0.4], [0.6, 0.7, 0.8, 0.6, 0.4, 0.3], final=3)
    page = html_page("t", compare([control, long], "control", None))
    assert 'id="lab-guard"' in page and "&lt;b&gt;long&lt;/b&gt;" in page and "<b>long" not in page
    assert "50.0 / 80.0 / 80.0 (3) / 30.0</td><td class=n>0.0, 50.0 (collapsed)" in page
    assert 'id="lab-guard"' not in html_page("t", compare([control], "control", None))

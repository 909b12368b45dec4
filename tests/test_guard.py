"""The collapse guard (selfloop/guard.py): each rule on hand-made monitor histories, and its action in a real loop:
a row (event and metric) per decision, the policy rolled back, the loop paused."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfloop.config import validate_config
from selfloop.guard import decide


def _cfg(**guard):
    return validate_config({"loop": {"name": "g"}, "guard": {"enabled": True, **guard}}).guard


def _h(*rows: dict) -> list[tuple[int, dict]]:
    return [(i + 1, r) for i, r in enumerate(rows)]


def test_the_fall_rule_by_hand() -> None:
    """Vote share 0.50, 0.70, 0.80 (the peak, iteration 3), 0.65: 0.15 below the peak, more than 0.1: it fires, and
    the last good policy is iteration 3's. A share that never rose above its first value is no rise-then-fall; a
    fall within 0.1 of the peak is not one either; with patience 2 one low iteration is not enough."""
    history = _h(*({"drift.vote_share": v} for v in (0.5, 0.7, 0.8, 0.65)))
    found = decide(history, _cfg())
    assert found is not None and (found.rule, found.kept) == ("fall", 3) and "peak 0.800 (iteration 3)" in found.why
    assert decide(_h(*({"drift.vote_share": v} for v in (0.8, 0.7, 0.6))), _cfg()) is None
    assert decide(_h(*({"drift.vote_share": v} for v in (0.5, 0.8, 0.75))), _cfg()) is None
    assert decide(history, _cfg(patience=2)) is None
    two_low = history + [(5, {"drift.vote_share": 0.6})]
    assert decide(two_low, _cfg(patience=2)).kept == 3
    certainty = _h(*({"drift.self_certainty": v} for v in (2.0, 3.0, 2.5)))
    assert decide(certainty, _cfg(monitor="drift.self_certainty", fall=0.4)).kept == 2


def test_the_collapse_and_drift_rules_by_hand() -> None:
    """Answer entropy 0.04 <= 0.05; duplicates 0.92 >= 0.9; distinct-2 0.2 below half of the first 0.5: each fires as
    a collapse, keeping the iteration before. KL 0.6 > 0.5 fires only when max_kl is set."""
    found = decide(_h({"drift.answer_entropy": 1.2}, {"drift.answer_entropy": 0.04}), _cfg())
    assert (found.rule, found.kept) == ("collapse", 1)
    assert decide(_h({"drift.duplicate_share": 0.1}, {"drift.duplicate_share": 0.92}), _cfg()).rule == "collapse"
    assert decide(_h({"drift.distinct_2": 0.5}, {"drift.distinct_2": 0.2}), _cfg()).rule == "collapse"
    assert decide(_h({"drift.distinct_2": 0.5}, {"drift.distinct_2": 0.3}), _cfg()) is None
    assert decide(_h({"drift.kl_from_start": 0.0}, {"drift.kl_from_start": 0.6}), _cfg()) is None
    assert decide(_h({"drift.kl_from_start": 0.0}, {"drift.kl_from_start": 0.6}), _cfg(max_kl=0.5)).rule == "drift"
    first = decide(_h({"drift.answer_entropy": 0.0}), _cfg())
    assert first.kept is None  # collapsed in its first iteration: the loop's start is the last good policy


@pytest.mark.integration
def test_the_guard_rolls_back_and_pauses_a_loop_as_rows(tmp_path: Path) -> None:
    """A guard whose collapse floor every iteration crosses (entropy floor 100 nats) fires in iteration 1: the loop
    is paused with its start as the policy, a guard.fired event holds the rule and the checkpoint kept, and the
    iteration's guard.fired metric is 1."""
    import json

    from sqlalchemy import create_engine, text

    from tests.conftest import selfloop_cli, tiny_yaml

    url = f"sqlite:///{tmp_path / 'g.db'}"
    config = tiny_yaml(tmp_path, url, guard={"enabled": True, "entropy_floor": 100.0})
    out = selfloop_cli("run", "--config", str(config))
    assert out.returncode == 0, out.stderr[-3000:]
    engine = create_engine(url)
    with engine.connect() as conn:
        status, current, reason = conn.execute(text("SELECT status, current_checkpoint_id, status_reason FROM loops")).one()
        events = conn.execute(text("SELECT message, data FROM events WHERE kind = 'guard.fired'")).all()
        fired = conn.execute(text("SELECT value FROM metrics WHERE name = 'guard.fired'")).scalars().all()
        iterations = conn.execute(text("SELECT count(*) FROM iterations")).scalar()
    engine.dispose()
    assert status == "paused" and current is None and reason.startswith("guard: iteration 1: mean answer entropy")
    assert iterations == 1 and fired == [1.0] and len(events) == 1
    data = json.loads(events[0][1]) if isinstance(events[0][1], str) else events[0][1]
    assert data["rule"] == "collapse" and data["action"] == "rollback" and data["kept_iteration"] is None

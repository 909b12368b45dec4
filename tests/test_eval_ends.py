"""Suites answered at a loop's ends only (eval.suites[].when 'ends'): the start and the final policy (in the last
iteration, the one the gate keeps) answer them, every other policy skips them, and what a lab reads of the loop is
what it reads when every iteration answers them."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from selfloop.config import validate_config
from selfloop.db.engine import open_database
from selfloop.db.lab import loop_outcome
from selfloop.db.models import Checkpoint, EvalItem, Iteration, Loop
from selfloop.errors import ConfigError, SelfloopError
from selfloop.evals import cache as eval_cache
from selfloop.evals.suites import Item
from selfloop.loop import open_loop
from selfloop.phases.evaluate import answered_by
from tests.conftest import make_config, selfloop_cli, tiny_yaml

VAL = {"name": "val", "kind": "arithmetic", "size": 12, "max_new_tokens": 8, "split": "validation"}
TEST = {"name": "test", "kind": "arithmetic", "size": 12, "max_new_tokens": 8, "split": "test"}


def _with(tmp_path: Path, **eval_section) -> dict:
    return make_config(tmp_path, loop={"name": "t", "max_iterations": 3},
                       eval={"suites": [VAL, {**TEST, "when": "ends"}], "main_metric": "val/greedy_accuracy",
                             **eval_section}).model_dump(mode="json")


def test_which_policies_answer_an_ends_suite(tmp_path: Path) -> None:
    config = validate_config(_with(tmp_path))
    names = {(n, role): [s.name for s in answered_by(config, n, role)] for n in (1, 2, 3) for role in ("baseline", "candidate")}
    assert names == {(1, "baseline"): ["val", "test"], (1, "candidate"): ["val"],
                     (2, "baseline"): ["val"], (2, "candidate"): ["val"],
                     (3, "baseline"): ["val"], (3, "candidate"): ["val"]}
    # The last iteration, once its gate's decision is known: the policy kept answers everything, the other does not.
    assert [s.name for s in answered_by(config, 3, "candidate", "candidate")] == ["val", "test"]
    assert [s.name for s in answered_by(config, 3, "baseline", "candidate")] == ["val"]
    assert [s.name for s in answered_by(config, 3, "baseline", "baseline")] == ["val", "test"]


def test_an_ends_suite_is_refused_where_no_end_would_answer_it(tmp_path: Path) -> None:
    data = _with(tmp_path)
    data["loop"]["max_iterations"] = None
    with pytest.raises(ConfigError, match=r"eval.suites\[test\].when 'ends'.*loop.max_iterations is null"):
        validate_config(data)
    data = _with(tmp_path)
    data["guard"] = {"enabled": True, "action": "stop"}
    with pytest.raises(ConfigError, match=r"guard.action 'stop'"):
        validate_config(data)
    data = _with(tmp_path)
    data["eval"]["suites"] = [{**VAL, "when": "ends"}, TEST]
    with pytest.raises(ConfigError, match=r"suite 'val' is answered every iteration"):
        validate_config(data)
    data = _with(tmp_path)
    data["eval"]["suites"][1]["when"] = "sometimes"
    with pytest.raises(ConfigError, match="when"):
        validate_config(data)


def test_when_is_not_part_of_what_the_answers_depend_on(tmp_path: Path) -> None:
    """The eval cache and the store's reuse take a suite's answers whichever iterations answer it: a lab that moves its
    test suites to the ends keeps its cached start."""
    config = validate_config(_with(tmp_path))
    ends = config.eval.suites[1]
    every = ends.model_copy(update={"when": "every"})
    items = [Item("What is 1 + 2?", "3")]
    assert eval_cache.key(config, "m" * 64, None, ends, items) == eval_cache.key(config, "m" * 64, None, every, items)
    assert "when" not in ends.answer_settings() and ends.answer_settings() == {
        k: v for k, v in every.model_dump(mode="json").items() if k != "when"}


def _items(url: str) -> dict[tuple[int, str, str], list[tuple]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT i.number, e.role, e.suite, e.item_index, e.response, e.correct FROM eval_items e "
                                 "JOIN iterations i ON i.id = e.iteration_id ORDER BY i.number, e.role, e.suite, "
                                 "e.item_index")).all()
    engine.dispose()
    out: dict[tuple[int, str, str], list[tuple]] = {}
    for number, role, suite, *rest in rows:
        out.setdefault((number, role, suite), []).append(tuple(rest))
    return out


def _outcome(url: str, name: str) -> dict:
    db = open_database(url, deferred=True)
    try:
        with db.session() as session:
            outcome = loop_outcome(session, name)
    finally:
        db.dispose()
    assert outcome is not None
    return outcome


@pytest.mark.integration
def test_a_loop_with_an_ends_suite_reads_the_same_as_one_answering_it_every_iteration(tmp_path: Path) -> None:
    """Two stores run the same 3-iteration loop; one answers its test suite every iteration, the other at the ends.
    The ends store's test rows are the every store's rows of the same policies, and the lab reads the same start and
    final flags from both; only the curve's middle points are missing."""
    runs = {}
    for when in ("every", "ends"):
        url = f"sqlite:///{tmp_path / f'{when}.db'}"
        config = tiny_yaml(tmp_path, url, name=f"{when}.yaml", loop__max_iterations=3,
                           eval__suites=[VAL, {**TEST, "when": when}], eval__main_metric="val/greedy_accuracy")
        out = selfloop_cli("run", "--config", str(config))
        assert out.returncode == 0, out.stderr[-3000:]
        runs[when] = (_items(url), _outcome(url, "tiny"))
    (every, every_outcome), (ends, ends_outcome) = runs["every"], runs["ends"]
    # The tiny loop's tolerance (1.0) promotes every candidate: the final policy is iteration 3's candidate.
    assert {k for k in ends if k[2] == "test"} == {(1, "baseline", "test"), (3, "candidate", "test")}
    assert {k: v for k, v in every.items() if k[2] == "val"} == {k: v for k, v in ends.items() if k[2] == "val"}
    for key, rows in ends.items():
        assert rows == every[key]  # the same answers, word for word
    assert ends_outcome["promoted"] == every_outcome["promoted"] == 3
    for suite in ("val", "test"):
        for side in ("start", "final"):
            assert ends_outcome["suites"][suite][side] == every_outcome["suites"][suite][side]
    assert ends_outcome["suites"]["val"]["curve"] == every_outcome["suites"]["val"]["curve"]
    curve = ends_outcome["suites"]["test"]["curve"]
    assert curve[:2] == [None, None] and curve[2] == every_outcome["suites"]["test"]["curve"][2] is not None


def _store(db, loop_id: int, number: int, base: int | None, promoted: bool, answers: dict[tuple[str, str], list[bool]]) -> int:
    """An iteration trained a checkpoint from `base`, with its gate's decision and the given held-out flags."""
    with db.session() as s:
        ckpt = Checkpoint(path=f"/nonexistent/{loop_id}/{number}", sha256="0" * 64, base_model="tiny", size_bytes=1)
        s.add(ckpt)
        s.flush()
        it = Iteration(loop_id=loop_id, number=number, status="done", base_checkpoint_id=base,
                       output_checkpoint_id=ckpt.id, promoted=promoted)
        s.add(it)
        s.flush()
        for (role, suite), flags in answers.items():
            s.add_all(EvalItem(iteration_id=it.id, role=role, suite=suite, item_index=i, prompt=f"{suite}{i}",
                               answer="1", response="", correct=c, num_tokens=1) for i, c in enumerate(flags))
        return ckpt.id


def test_the_final_policy_is_read_where_the_last_gate_rejected(tmp_path: Path, sqlite_url: str) -> None:
    """Promoted at 1, rejected at 2 and 3: the final policy is iteration 1's candidate, whose test answers are
    iteration 3's baseline's (it never answered the test suite as a candidate). A finished loop whose final policy
    never answered the suite is refused, a running one leaves it out."""
    config = validate_config({**_with(tmp_path), "database": {"url": sqlite_url}})
    db = open_database(sqlite_url, init=True)
    loop_id = open_loop(db, config).id
    start, one = [False, False, True], [True, False, True]
    first = _store(db, loop_id, 1, None, True, {("baseline", "val"): start, ("candidate", "val"): one,
                                                ("baseline", "test"): start})
    _store(db, loop_id, 2, first, False, {("baseline", "val"): one, ("candidate", "val"): [False] * 3})
    with db.session() as s:
        s.get(Loop, loop_id).status = "ready"
    with db.session() as s:
        running = loop_outcome(s, "t")
    assert running is not None and set(running["suites"]) == {"val"}  # iteration 1's candidate has not answered test yet
    with db.session() as s:
        s.get(Loop, loop_id).status = "finished"
    with db.session() as s, pytest.raises(SelfloopError, match=r"no answers to suite\(s\) test"):
        loop_outcome(s, "t")
    _store(db, loop_id, 3, first, False, {("baseline", "val"): one, ("candidate", "val"): [False] * 3,
                                          ("baseline", "test"): [True, True, False], ("candidate", "test"): [False] * 3})
    with db.session() as s:
        outcome = loop_outcome(s, "t")
    db.dispose()
    assert outcome is not None
    assert outcome["suites"]["test"]["start"] == start and outcome["suites"]["test"]["final"] == [True, True, False]
    assert outcome["suites"]["val"]["final"] == one


def test_where_the_last_gate_will_reject_the_baseline_answers_the_ends_suite(tmp_path: Path, sqlite_url: str) -> None:
    """The last iteration's candidate is worse on the gate's suite by more than the tolerance: the evaluate phase
    decides as the gate will, so the baseline (the policy the loop ends with) answers the test suite, here copied from
    the start's answers, and the candidate answers nothing but the gate's suite. Every answer the phase needs is stored
    or copied, so no model runs: a policy asked to generate would fail on its made-up checkpoint."""
    from selfloop.db.models import Eval, PhaseRun
    from selfloop.evals.suites import load_suite
    from selfloop.phases.context import PhaseContext
    from selfloop.phases.evaluate import run as evaluate
    from selfloop.phases.promote import run as promote
    from selfloop.runtime import Runtime

    data = _with(tmp_path, tolerance=0.0)
    data["loop"]["max_iterations"] = 2
    data["database"] = {"url": sqlite_url}
    config = validate_config(data)
    val, test = (load_suite(s) for s in config.eval.suites)
    db = open_database(sqlite_url, init=True)
    loop_id = open_loop(db, config).id
    right = [i % 2 == 0 for i in range(len(val))]

    def answers(it_id: int, role: str, suite: str, items: list, correct: list[bool]) -> list[EvalItem]:
        return [EvalItem(iteration_id=it_id, role=role, suite=suite, item_index=i, prompt=item.prompt, answer=item.answer,
                         response="r", predicted=None, correct=c, num_tokens=2) for i, (item, c) in enumerate(zip(items, correct))]

    with db.session() as s:
        made = [Checkpoint(path=f"/nonexistent/{n}", sha256="0" * 64, base_model="tiny", size_bytes=1) for n in (1, 2)]
        s.add_all(made)
        s.flush()
        first = Iteration(loop_id=loop_id, number=1, status="done", output_checkpoint_id=made[0].id, promoted=False)
        last = Iteration(loop_id=loop_id, number=2, status="running", output_checkpoint_id=made[1].id)
        s.add_all([first, last])
        s.flush()
        s.add_all(answers(first.id, "baseline", "val", val, right) + answers(first.id, "baseline", "test", test, [True] * len(test))
                  + answers(first.id, "candidate", "val", val, right))
        s.add_all([Eval(iteration_id=first.id, role="baseline", checkpoint_id=None, suite=suite, n=1, metric="greedy_accuracy",
                        value=0.5) for suite in ("val", "test")])  # the start's evaluation is done: copied, not answered
        s.add_all(answers(last.id, "candidate", "val", val, [False] * len(val)))  # worse by half the items
        s.add_all([PhaseRun(iteration_id=last.id, phase=p, status="running") for p in ("evaluate", "promote")])
        s.flush()
        runs = {p: r for p, r in s.query(PhaseRun.phase, PhaseRun.id).filter(PhaseRun.iteration_id == last.id)}
        last_id = last.id
    for phase, body in (("evaluate", evaluate), ("promote", promote)):
        body(PhaseContext(db, config, Runtime(config), loop_id, last_id, 2, phase, runs[phase], None))
    with db.session() as s:
        answered = {(role, suite) for role, suite in s.query(EvalItem.role, EvalItem.suite).filter(EvalItem.iteration_id == last_id)}
        figures = {(role, suite) for role, suite in s.query(Eval.role, Eval.suite).filter(Eval.iteration_id == last_id)}
        promoted = s.get(Iteration, last_id).promoted
        s.get(Iteration, last_id).status = "done"
        s.get(Loop, loop_id).status = "finished"
    assert promoted is False  # the gate decided as the evaluate phase expected
    assert answered == figures == {("baseline", "val"), ("candidate", "val"), ("baseline", "test")}
    with db.session() as s:
        outcome = loop_outcome(s, "t")
    db.dispose()
    assert outcome is not None and outcome["suites"]["test"]["final"] == [True] * len(test)

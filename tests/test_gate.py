"""Evaluation, the promotion gate, the pause after M rejections, drift events, and reports."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from sqlalchemy import select

from selfloop.db.engine import open_database
from selfloop.db.models import Checkpoint, Eval, EvalItem, Event, Iteration, Loop, Metric, PhaseRun, Sample
from selfloop.db.queries import set_metric
from selfloop.errors import ConfigError
from selfloop.evals.drift import monitor
from selfloop.evals.stats import paired_difference, wilson
from selfloop.families import arithmetic, units
from selfloop.loop import open_loop
from selfloop.phases.context import PhaseContext
from selfloop.phases.promote import run as promote
from selfloop.runtime import Runtime


def test_splits_are_disjoint_and_big_enough() -> None:
    for level in (1, 2, 3):
        train = {p.prompt for p in arithmetic.problems([level], "train")}
        held = {p.prompt for p in arithmetic.problems([level], "eval")}
        assert train and held and not train & held
    from selfloop.config import SuiteConfig
    from selfloop.evals.suites import load_suite

    assert len(load_suite(SuiteConfig(name="a", kind="arithmetic", size=240, seed=0))) == 240  # the demo's: >= 200
    assert not {p.prompt for p in units.problems("train")} & {p.prompt for p in units.problems("eval")}
    assert arithmetic.check_disjoint({"What is 1 + 1?"}, ["What is 1 + 1?", "What is 2 + 2?"]) == ["What is 1 + 1?"]


def test_wilson_and_paired_difference_by_hand() -> None:
    """Wilson, 8 of 10, z = 1.96: centre (0.8 + 0.19208) / 1.38416 = 0.71681, half-width
    1.96 * sqrt(0.016 + 0.0096040) / 1.38416 = 0.22660 -> (0.49021, 0.94341).
    Paired, d = (1, 0, 0, 1, -1, 0): mean 1/6, sample sd 0.752773, half 1.96 * 0.752773 / sqrt(6) = 0.602333."""
    low, high = wilson(8, 10, z=1.96)
    assert (low, high) == (pytest.approx(0.49016, abs=1e-4), pytest.approx(0.94332, abs=1e-4))
    mean, lo, hi = paired_difference([1, 1, 0, 1, 0, 0], [0, 1, 0, 0, 1, 0], z=1.96)
    sd = math.sqrt(sum((x - 1 / 6) ** 2 for x in (1, 0, 0, 1, -1, 0)) / 5)
    assert mean == pytest.approx(1 / 6) and hi - mean == pytest.approx(1.96 * sd / math.sqrt(6))
    assert wilson(0, 0) == (0.0, 1.0)


def _iteration_with_evals(db, loop_id: int, number: int, candidate: list[bool], baseline: list[bool]) -> int:
    with db.session() as s:
        ckpt = Checkpoint(path=f"/nonexistent/{loop_id}/{number}", sha256="0" * 64, base_model="tiny", size_bytes=1)
        s.add(ckpt)
        s.flush()
        it = Iteration(loop_id=loop_id, number=number, status="running", output_checkpoint_id=ckpt.id)
        s.add(it)
        s.flush()
        for role, correct in (("candidate", candidate), ("baseline", baseline)):
            for i, c in enumerate(correct):
                s.add(EvalItem(iteration_id=it.id, role=role, suite="arithmetic", item_index=i, prompt=f"q{i}", answer="1",
                               response="", predicted=None, correct=c, num_tokens=3))
            s.add(Eval(iteration_id=it.id, role=role, suite="arithmetic", metric="greedy_accuracy",
                       value=sum(correct) / len(correct), n=len(correct)))
        s.add(PhaseRun(iteration_id=it.id, phase="promote", status="running"))
        return it.id


def _promote(db, config, loop_id: int, iteration_id: int, number: int) -> None:
    with db.session() as s:
        run_id = s.scalar(select(PhaseRun.id).where(PhaseRun.iteration_id == iteration_id))
    promote(PhaseContext(db, config, Runtime(config), loop_id, iteration_id, number, "promote", run_id, None))


def test_gate_refuses_worse_beyond_tolerance_and_promotes_otherwise(sqlite_url: str, config_factory) -> None:
    config = config_factory(sqlite_url, eval={"tolerance": 0.05, "max_rejections": 2,
                                              "suites": [{"name": "arithmetic", "kind": "arithmetic", "size": 10}]})
    db = open_database(sqlite_url, init=True)
    loop_id = open_loop(db, config).id
    base = [True] * 10 + [False] * 10  # 0.50
    worse = _iteration_with_evals(db, loop_id, 1, [True] * 8 + [False] * 12, base)  # 0.40: -0.10 < -0.05
    _promote(db, config, loop_id, worse, 1)
    near = _iteration_with_evals(db, loop_id, 2, [True] * 9 + [False] * 11, base)  # 0.45: within 0.05
    _promote(db, config, loop_id, near, 2)
    with db.session() as s:
        assert s.get(Iteration, worse).promoted is False and s.get(Iteration, near).promoted is True
        assert s.get(Loop, loop_id).current_checkpoint_id == s.get(Iteration, near).output_checkpoint_id
        metrics = dict(s.execute(select(Metric.name, Metric.value).where(Metric.iteration_id == worse)).all())
        kinds = s.scalars(select(Event.kind).where(Event.loop_id == loop_id)).all()
    assert metrics["promote.delta"] == pytest.approx(-0.1)
    assert metrics["promote.delta_ci_low"] < -0.1 < metrics["promote.delta_ci_high"]
    assert "promote.rejected" in kinds and "promote.accepted" in kinds and "loop.paused" not in kinds
    db.dispose()


@pytest.mark.integration
def test_the_loop_pauses_after_m_rejections_in_a_row(sqlite_url: str, config_factory) -> None:
    from selfloop.loop import run_iteration

    config = config_factory(sqlite_url, eval={"tolerance": 0.0, "max_rejections": 2,
                                              "suites": [{"name": "arithmetic", "kind": "arithmetic", "size": 10}]})
    db = open_database(sqlite_url, init=True)
    loop_id = open_loop(db, config).id
    for number in (1, 2):
        it = _iteration_with_evals(db, loop_id, number, [False] * 10, [True] * 10)
        _promote(db, config, loop_id, it, number)
        with db.session() as s:
            s.get(Iteration, it).status = "done"
    with db.session() as s:
        loop = s.get(Loop, loop_id)
        assert loop.status == "paused" and "2 rejected candidates in a row" in loop.status_reason
        assert "--unpause" in loop.status_reason
    assert run_iteration(db, config, Runtime(config)).status == "paused"  # no more compute spent
    db.dispose()


def test_drift_monitors_store_metrics_and_warn(sqlite_url: str, config_factory) -> None:
    from tests.conftest import store_samples

    config = config_factory(sqlite_url, eval={"drift": {"max_length_growth": 1.5, "judge_inflation": 0.5,
                                                        "min_mean_logprob": -0.05, "max_vote_share": 0.9}})
    db = open_database(sqlite_url, init=True)
    first = store_samples(db, config, [("p", "1", ["a", "b"])])
    with db.session() as s:
        loop_id = s.get(Iteration, first).loop_id
        set_metric(s, first, "judge.mean_score", 2.0)
        set_metric(s, first, "judge.vote_share", 0.5)
        s.add(Eval(iteration_id=first, role="baseline", suite="arithmetic", metric="greedy_accuracy", value=0.4, n=10))
        assert monitor(s, config, loop_id, first, 1)["drift.mean_response_tokens"] == 4.0
        second = Iteration(loop_id=loop_id, number=2, status="running")
        s.add(second)
        s.flush()
        from selfloop.db.models import Prompt

        p = Prompt(iteration_id=second.id, source="task", item_index=0, text="p")
        s.add(p)
        s.flush()
        s.add(Sample(prompt_id=p.id, sample_index=0, iteration_id=second.id, text="long", token_ids=list(range(10)),
                     token_logprobs=[-0.01] * 10, num_tokens=10, sum_logprob=-0.1, mean_logprob=-0.01,
                     finish_reason="length", seed=0, temperature=1.0))
        set_metric(s, second.id, "judge.mean_score", 3.0)  # +1.0 while the held-out metric fell
        set_metric(s, second.id, "judge.vote_share", 0.95)
        s.add(Eval(iteration_id=second.id, role="candidate", suite="arithmetic", metric="greedy_accuracy", value=0.3, n=10))
        s.flush()
        now = monitor(s, config, loop_id, second.id, 2)
        kinds = set(s.scalars(select(Event.kind).where(Event.iteration_id == second.id)))
    assert now == {"drift.mean_response_tokens": 10.0, "drift.mean_token_logprob": -0.01, "drift.judge_score": 3.0,
                   "drift.vote_share": 0.95, "drift.duplicate_share": 0.0}
    assert kinds == {"drift.length", "drift.judge_inflation", "drift.sharpening", "drift.vote_collapse"}
    db.dispose()


def test_overlapping_eval_suite_is_refused(tmp_path: Path, sqlite_url: str, config_factory) -> None:
    from selfloop.evals.suites import Item
    from selfloop.phases.evaluate import check_disjoint

    train = tmp_path / "train.jsonl"
    train.write_text('{"prompt": "What is 2 + 2?", "answer": "4"}\n{"prompt": "Name a colour."}\n')
    config = config_factory(sqlite_url, generation={"tasks": {"kind": "jsonl", "path": str(train)}})
    db = open_database(sqlite_url, init=True)
    loop_id = open_loop(db, config).id
    ctx = PhaseContext(db, config, Runtime(config), loop_id, 0, 1, "evaluate", 0, None)
    with pytest.raises(ConfigError, match="shares 1 problem"):
        check_disjoint(ctx, {"mine": [Item("What is 2 + 2?", "4"), Item("What is 3 + 3?", "6")]})
    check_disjoint(ctx, {"mine": [Item("What is 3 + 3?", "6")]})
    db.dispose()


@pytest.mark.integration
def test_report_of_a_real_fork_shows_its_lineage_decisions_and_curves(tmp_path: Path) -> None:
    import json
    import re

    from tests.conftest import selfloop_cli, tiny_yaml

    url = f"sqlite:///{tmp_path / 'selfloop.db'}"
    assert selfloop_cli("run", "--config", str(tiny_yaml(tmp_path, url))).returncode == 0
    assert selfloop_cli("fork", "tiny", "--at", "1", "--name", "tiny-b", "--db", url).returncode == 0
    assert selfloop_cli("resume", "tiny-b", "--db", url, "--iterations", "1").returncode == 0
    out = selfloop_cli("report", "tiny-b", "--db", url, "--out", str(tmp_path / "report"))
    assert out.returncode == 0, out.stderr[-2000:]
    page = (tmp_path / "report" / "index.html").read_text()
    assert "tiny (to iteration 1) → tiny-b" in page and "promote.accepted" in page
    charts = json.loads(re.search(r'id="charts-data">(.*?)</script>', page, re.S).group(1))
    accuracy = next(c for c in charts if c["id"] == "eval-arithmetic")["figure"]["data"]
    lines = {t["name"]: t["x"] for t in accuracy if t.get("mode") == "lines+markers"}
    # tiny up to its iteration 1 (the fork point, x = 0), then tiny-b's own iteration 1 at x = 1
    assert lines["greedy_accuracy (tiny, before the fork)"] == [-1, 0] and lines["greedy_accuracy"] == [0, 1]


def test_distinct_2_by_hand() -> None:
    from selfloop.evals.drift import distinct_2

    # bigrams: (a b) (b a) (a b) | (a b) -> 2 distinct of 4
    assert distinct_2(["a b a b", "a b"]) == 0.5
    assert distinct_2(["one", ""]) is None
    assert distinct_2(["the cat sat", "a dog ran"]) == 1.0


def test_collapse_monitors_by_hand(sqlite_url: str, config_factory) -> None:
    """answer entropy per prompt, duplicate share, and the k1 estimate of KL(current || start) per token."""
    import math

    from selfloop.evals.drift import answer_entropy_mean, duplicate_share, kl_per_token
    from selfloop.phases.judge import run as judge_run
    from tests.conftest import store_samples
    from tests.test_judge_phase import _context

    config = config_factory(sqlite_url, judge={"signals": ["vote"]}, train={"algorithm": "ttrl"})
    db = open_database(sqlite_url, init=True)
    it = store_samples(db, config, [("p", "1", ["4", "4", "4 ", "4"]), ("q", "2", ["1", "2", "x", "2"])])
    judge_run(_context(db, config, it))
    with db.session() as s:
        # prompt p: one answer (entropy 0); q: {1: 1, 2: 2, none: 1} -> 1.5 ln 2 ... = -(.25 ln .25 * 2 + .5 ln .5)
        assert answer_entropy_mean(s, it) == pytest.approx((0.0 + (0.5 * math.log(4) + 0.5 * math.log(2))) / 2)
        # p's samples 1, 2 ("4 " stripped), 3 repeat sample 0; q's sample 3 repeats sample 1: 4 of 8
        assert duplicate_share(s, it) == 0.5
    db.dispose()
    # samples drawn from the current policy: log-probs under it and under the start, token by token
    assert kl_per_token([[-1.0, -2.0], [-0.5]], [[-1.5, -2.0], [-1.0]]) == pytest.approx((0.5 + 0.0 + 0.5) / 3)
    assert kl_per_token([], []) is None


@pytest.mark.integration
def test_a_gate_without_labels_decides_on_self_consistency(tmp_path) -> None:
    """For users with no labelled suite: held-out prompts without answers (labelled: false), answered greedily and k
    times; the gate compares each policy's self-consistency (its greedy answer agrees with the majority of its k
    samples), paired over the same prompts."""
    import json

    from sqlalchemy import create_engine, text

    from tests.conftest import selfloop_cli, tiny_yaml

    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps({"prompt": f"What is {a} + {a + 1}?"}) + "\n" for a in range(40, 52)))
    url = f"sqlite:///{tmp_path / 'g.db'}"
    config = tiny_yaml(tmp_path, url, loop__max_iterations=1,
                       eval__suites=[{"name": "mine", "kind": "jsonl", "path": str(held), "labelled": False,
                                      "majority_k": 2, "max_new_tokens": 8}],
                       eval__main_metric="mine/self_consistency")
    out = selfloop_cli("run", "--config", str(config))
    assert out.returncode == 0, out.stderr[-3000:]
    engine = create_engine(url)
    with engine.connect() as conn:
        metrics = set(conn.execute(text("SELECT metric FROM evals WHERE suite = 'mine'")).scalars())
        decided = conn.execute(text("SELECT data FROM events WHERE kind IN ('promote.accepted', 'promote.rejected')")).scalar()
        items = conn.execute(text("SELECT role, predicted, majority_answer FROM eval_items")).all()
    engine.dispose()
    assert metrics == {"self_consistency", "mean_response_tokens"}  # no accuracy without labels
    data = json.loads(decided) if isinstance(decided, str) else decided
    assert data["metric"] == "mine/self_consistency" and "delta" in data
    from selfloop.phases.evaluate import consistent

    for role in ("candidate", "baseline"):
        mine = [consistent(p, m) for r, p, m in items if r == role]
        assert len(mine) == 12
        assert data[role] == pytest.approx(sum(mine) / 12)


def test_an_unlabelled_suite_is_refused_where_it_cannot_serve() -> None:
    from selfloop.config import validate_config
    from selfloop.errors import ConfigError

    base = {"loop": {"name": "x"}}
    with pytest.raises(ConfigError, match="labelled: false is for a jsonl file .* majority_k >= 2"):
        validate_config({**base, "eval": {"suites": [{"name": "a", "kind": "arithmetic", "labelled": False}]}})
    with pytest.raises(ConfigError, match="suite 'u' has no labels; the gate can decide on its self_consistency only"):
        validate_config({**base, "eval": {"main_metric": "u/greedy_accuracy", "suites": [
            {"name": "u", "kind": "jsonl", "path": "/dev/null", "labelled": False, "majority_k": 4}]}})
    with pytest.raises(ConfigError, match="needs majority_k >= 2"):
        validate_config({**base, "eval": {"main_metric": "a/self_consistency", "suites": [{"name": "a", "kind": "arithmetic"}]}})

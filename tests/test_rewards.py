"""The lab's controls and ceilings (`judge.reward`): 'shuffled' permutes each prompt's judged values among its
samples (seeded), 'verify' replaces them with the family's checker; the judged values stay in the details; a
judgment is transformed once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from selfloop.db.engine import open_database
from selfloop.db.models import Judgment, Metric, Prompt, Sample
from selfloop.judging.rewards import permutation, transform
from selfloop.phases.judge import run as judge_run
from tests.conftest import store_samples
from tests.test_judge_phase import _context


@pytest.fixture
def db(sqlite_url: str):
    database = open_database(sqlite_url, init=True)
    yield database
    database.dispose()


PROMPTS = [("What is 2 + 3?", "5", ["5", "6", "5", "7", "5"]), ("What is 4 + 4?", "8", ["8", "9", "9", "9"]),
           ("Say a word", None, ["a", "b", "c"])]


def _judged(db, it: int) -> dict[tuple[int, int, str, int], tuple]:
    """(prompt item, sample index, kind, judge index) -> (the score training reads, its ok, details), the details
    completed with the transform's columns: reward (the mode), judged_score and judged_parse_ok (the columns as
    judged, which a transform never rewrites)."""
    with db.session() as s:
        rows = s.execute(
            select(Prompt.item_index, Sample.sample_index, Judgment.kind, Judgment.judge_index, Judgment.reward_mode,
                   Judgment.reward, Judgment.reward_ok, Judgment.score, Judgment.parse_ok, Judgment.details)
            .join(Sample, Sample.id == Judgment.sample_id).join(Prompt, Prompt.id == Sample.prompt_id)
            .where(Sample.iteration_id == it)).all()
    out = {}
    for p, i, k, j, mode, reward, reward_ok, score, ok, details in rows:
        if mode is None:
            out[(p, i, k, j)] = (score, ok, details)
        else:
            out[(p, i, k, j)] = (reward, reward_ok, {**(details or {}), "reward": mode, "judged_score": score,
                                                     "judged_parse_ok": ok})
    return out


def _add_llm_scores(db, it: int) -> None:
    """Two made-up LLM-judge scores per sample: (prompt + sample) and its half, the second unparsed for sample 0."""
    with db.session() as s:
        for sid, p, i in s.execute(select(Sample.id, Prompt.item_index, Sample.sample_index)
                                   .join(Prompt, Prompt.id == Sample.prompt_id).where(Sample.iteration_id == it)):
            s.add(Judgment(sample_id=sid, kind="llm_judge", judge_index=0, score=float(p + i), parse_ok=True))
            s.add(Judgment(sample_id=sid, kind="llm_judge", judge_index=1, score=None if i == 0 else (p + i) / 2,
                           parse_ok=i != 0))


def test_shuffled_is_a_seeded_permutation_within_each_prompt(db, config_factory) -> None:
    config = config_factory(db.url, judge={"signals": ["vote"]}, train={"algorithm": "ttrl"})
    it = store_samples(db, config, PROMPTS)
    judge_run(_context(db, config, it))
    _add_llm_scores(db, it)
    before = _judged(db, it)
    with db.session() as s:
        assert transform(s, it, "shuffled", 7, 1) == len(before)
    after = _judged(db, it)
    moved = 0
    for prompt in range(3):
        for kind in ("vote", "llm_judge"):
            keys = [k for k in before if k[0] == prompt and k[2] == kind]
            # the same multiset of (score, parse_ok) per prompt, signal and judge index
            for j in {k[3] for k in keys}:
                column = [k for k in keys if k[3] == j]
                assert Counter(before[k][:2] for k in column) == Counter(after[k][:2] for k in column)
            for k in keys:  # each sample took all of one sample's judgments, and kept its own in the details
                source = after[k][2]["from_sample"]
                assert after[k][:2] == before[(prompt, source, kind, k[3])][:2]
                assert (after[k][2]["judged_score"], after[k][2]["judged_parse_ok"]) == before[k][:2]
                assert after[k][2]["reward"] == "shuffled"
                moved += source != k[1]
    assert moved > 0
    # seeded: the permutation is a function of the seed string; another loop seed draws another one
    assert permutation(5, "7:shuffled:1:task:0:vote") == permutation(5, "7:shuffled:1:task:0:vote")
    assert len({tuple(permutation(5, f"{seed}:shuffled:1:task:0:vote")) for seed in range(20)}) > 1
    assert sorted(permutation(5, "x")) == list(range(5))
    # transformed once: a second call changes nothing
    with db.session() as s:
        assert transform(s, it, "shuffled", 7, 1) == 0
    assert _judged(db, it) == after


def test_verify_is_the_familys_checker(db, config_factory) -> None:
    config = config_factory(db.url, judge={"signals": ["vote"]}, train={"algorithm": "ttrl"})
    it = store_samples(db, config, PROMPTS)
    judge_run(_context(db, config, it))
    _add_llm_scores(db, it)
    with db.session() as s:
        transform(s, it, "verify", 0, 1)
        correct = {(p, i): c for p, i, c in s.execute(select(Prompt.item_index, Sample.sample_index, Sample.correct)
                                                     .join(Prompt, Prompt.id == Sample.prompt_id))}
    for (p, i, kind, _), (score, ok, details) in _judged(db, it).items():
        truth = correct[(p, i)]
        if truth is None:  # no known answer: no reward at all
            assert score is None and not ok
        else:
            assert score == ({"vote": 1.0, "llm_judge": 5.0}[kind] if truth else 0.0) and ok
        assert details["reward"] == "verify"
    assert [correct[(0, i)] for i in range(5)] == [True, False, True, False, True]


@pytest.mark.parametrize("mode", ["verify", "shuffled"])
def test_the_judge_phase_trains_on_the_transformed_reward(db, config_factory, mode: str) -> None:
    """Through the judge phase: TTRL's selection reads the transformed vote scores, and judge.* describes them
    (verify: every reward right, judge.reward_accuracy 1)."""
    from selfloop.algorithms import trainer

    config = config_factory(db.url, judge={"signals": ["vote"], "reward": mode}, train={"algorithm": "ttrl"})
    it = store_samples(db, config, PROMPTS[:2])
    judge_run(_context(db, config, it))
    with db.session() as s:
        metrics = dict(s.execute(select(Metric.name, Metric.value).where(Metric.iteration_id == it)).all())
        rewards = [r["reward"] for r in trainer("ttrl").select(s, it, config)]
        scores = [score for score, in s.execute(select(Judgment.trained_score).join(Sample, Sample.id == Judgment.sample_id)
                  .join(Prompt, Prompt.id == Sample.prompt_id).order_by(Prompt.item_index, Sample.sample_index))]
    assert metrics[f"judge.{mode}_judgments"] == 9
    assert rewards and rewards == scores[: len(rewards)]  # selection read the transformed scores, and selected some
    if mode == "verify":
        assert scores == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]
        assert metrics["judge.reward_accuracy"] == 1.0 and metrics["judge.rewarded_right"] == 1.0
    else:  # the majority's agreement (5: 1 0 1 0 1; 9: 0 1 1 1), permuted within each prompt
        assert sorted(scores[:5]) == [0.0, 0.0, 1.0, 1.0, 1.0] and sorted(scores[5:]) == [0.0, 1.0, 1.0, 1.0]
    # the judged value is untouched: the vote's own agreement, beside the reward; the dashboard shows both
    from selfloop.ui.views import prompt_detail

    with db.session() as s:
        judged = [score for score, in s.execute(select(Judgment.score).join(Sample, Sample.id == Judgment.sample_id)
                  .join(Prompt, Prompt.id == Sample.prompt_id).order_by(Prompt.item_index, Sample.sample_index))]
        first = s.scalar(select(Prompt.id).where(Prompt.iteration_id == it).order_by(Prompt.item_index).limit(1))
        shown = [j for sample in prompt_detail(s, first).samples.rows for j in sample.judgments]
    assert judged == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    assert [(j.score, j.reward_mode, j.reward) for j in shown] == [(v, mode, r) for v, r in zip(judged[:5], scores[:5])]


@pytest.mark.integration
def test_a_reward_function_named_in_the_config_is_the_reward_trained_on(tmp_path: Path) -> None:
    """TRL's `reward_funcs` for users who do not want a whole task family: a Python function in the config. Each
    vote judgment's score is the function's reward of its sample, the judged value kept in score; a
    function that cannot be imported, or returns a value outside [0, 1], is one line."""

    from sqlalchemy import create_engine, text

    from tests.conftest import selfloop_cli, tiny_yaml

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "my_rewards.py").write_text(
        "def digits(prompts, completions, answers):\n"
        "    # the share of digits among a completion's characters\n"
        "    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]\n"
        "def broken(prompts, completions, answers):\n    return [2.0] * len(completions)\n")
    env = {"PYTHONPATH": f"{tmp_path / 'site'}"}
    url = f"sqlite:///{tmp_path / 'r.db'}"
    config = tiny_yaml(tmp_path, url, loop__max_iterations=1, train__algorithm="ttrl",
                       judge__reward="function", judge__reward_function="my_rewards:digits")
    out = selfloop_cli("run", "--config", str(config), env=env, fresh=True)
    assert out.returncode == 0, out.stderr[-3000:]
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT s.text, j.reward, j.reward_mode, j.score FROM judgments j "
                                 "JOIN samples s ON s.id = j.sample_id WHERE j.kind = 'vote'")).all()
        trained = conn.execute(text("SELECT count(*) FROM examples")).scalar()
    engine.dispose()
    assert rows and trained > 0
    for sample, reward, mode, judged in rows:  # the function's reward beside the vote's judged score
        assert reward == pytest.approx(sum(ch.isdigit() for ch in sample) / max(1, len(sample)))
        assert mode == "function" and judged in (0.0, 1.0)
    missing = tiny_yaml(tmp_path, url, name="missing.yaml", judge__reward="function", judge__reward_function="nope:f")
    refused = selfloop_cli("config", "validate", str(missing), env=env, fresh=True)
    assert refused.returncode == 2 and "judge.reward_function 'nope:f': cannot import 'nope'" in refused.stderr
    (tmp_path / "b").mkdir()
    broken = tiny_yaml(tmp_path / "b", f"sqlite:///{tmp_path / 'b' / 'r.db'}", loop__max_iterations=1,
                       judge__reward="function", judge__reward_function="my_rewards:broken")
    failed = selfloop_cli("run", "--config", str(broken), env=env, fresh=True)
    assert failed.returncode != 0 and "returned 2.0 for completion 0 (a number from 0 to 1 is a reward)" in failed.stderr
    assert "Traceback" not in failed.stderr

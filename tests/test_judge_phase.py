"""The judge phase: every sample gets each signal; calibration against known answers by hand."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from selfloop.db.engine import open_database
from selfloop.db.models import Judgment, Sample, Vote
from selfloop.db.queries import metrics_of
from selfloop.judging.calibration import calibrate
from selfloop.phases.context import PhaseContext
from selfloop.phases.judge import run as judge_run
from selfloop.runtime import Runtime
from tests.conftest import store_samples


def _context(db, config, iteration_id: int, runtime=None) -> PhaseContext:
    from selfloop.db.models import PhaseRun

    with db.session() as s:
        run = s.scalars(select(PhaseRun).where(PhaseRun.iteration_id == iteration_id, PhaseRun.phase == "judge")).first()
        if run is None:
            run = PhaseRun(iteration_id=iteration_id, phase="judge", status="running")
            s.add(run)
            s.flush()
        run_id = run.id
    return PhaseContext(db, config, runtime or Runtime(config), 1, iteration_id, 1, "judge", run_id, None)


def test_vote_and_calibration_by_hand(sqlite_url: str, config_factory) -> None:
    config = config_factory(sqlite_url, judge={"signals": ["vote", "confidence"]})
    db = open_database(sqlite_url, init=True)
    it = store_samples(db, config, [
        # truth 5; answers 5, 5, 6, None -> majority 5 (2/3 of valid votes), label right
        ("What is 2 + 3?", "5", ["2 + 3 = 5", "The answer is 5.", "It is 6", "no idea"]),
        # truth 9; answers 8, 8, 9 -> majority 8, label wrong
        ("What is 4 + 5?", "9", ["8", "The answer is 8", "9"]),
        # unknown truth; a tie between 1 and 2: the first seen (1) wins
        ("Pick one", None, ["1", "2"]),
    ])
    judge_run(_context(db, config, it))
    with db.session() as s:
        votes = {v.answer: v for v in s.scalars(select(Vote))}
        assert set(votes) == {"5", "8", "1"}
        assert votes["5"].share == pytest.approx(2 / 3) and votes["5"].n_valid == 3 and votes["5"].n_votes == 4
        assert votes["5"].correct is True and votes["8"].correct is False and votes["1"].correct is None
        assert votes["1"].tie and votes["1"].tied_answers == ["1", "2"]
        rewards = [j.score for j in s.scalars(select(Judgment).where(Judgment.kind == "vote").order_by(Judgment.sample_id))]
        assert rewards == [1, 1, 0, 0, 1, 1, 0, 1, 0]
        m = metrics_of(s, it, "judge.")
    # label accuracy: 1 of 2 prompts with known answers.
    assert m["judge.label_accuracy"] == pytest.approx(0.5)
    # reward accuracy over the 7 samples with known truth: rewards (1,1,0,0 | 1,1,0) vs correct (1,1,0,0 | 0,0,1)
    # -> agree on 4 of the first 4 and 0 of the last 3 = 4/7.
    assert m["judge.reward_accuracy"] == pytest.approx(4 / 7)
    assert m["judge.vote_share"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 2) / 3)
    assert m["judge.valid_vote_rate"] == pytest.approx((3 / 4 + 1 + 1) / 3)
    with db.session() as s:
        conf = s.scalars(select(Judgment).where(Judgment.kind == "confidence")).all()
        assert len(conf) == 9 and all(j.score == -0.5 and j.details["sum_logprob"] == -2.0 for j in conf)
    db.dispose()


def test_llm_pick_accuracy_by_hand(sqlite_url: str, config_factory) -> None:
    config = config_factory(sqlite_url, judge={"signals": ["vote"]})
    db = open_database(sqlite_url, init=True)
    it = store_samples(db, config, [
        ("What is 2 + 3?", "5", ["5", "6", "5"]),  # judge prefers sample 1 (wrong)
        ("What is 1 + 1?", "2", ["2", "3"]),  # judge prefers sample 0 (right)
        ("What is 3 + 3?", "6", ["6", "6"]),  # all right: cannot count
    ])
    judge_run(_context(db, config, it))
    scores = {0: [2, 3], 1: [4, 5], 2: [1, None], 3: [5, 5], 4: [1, 2], 5: [3, 3], 6: [3, 3]}
    with db.session() as s:
        ids = s.scalars(select(Sample.id).order_by(Sample.id)).all()
        for k, sample_id in enumerate(ids):
            for j, score in enumerate(scores[k]):
                s.add(Judgment(sample_id=sample_id, kind="llm_judge", judge_index=j, score=score, parse_ok=score is not None))
        s.flush()
        m = calibrate(s, it)
    assert m["judge.llm_pick_accuracy"] == pytest.approx(0.5) and m["judge.llm_pick_n"] == 2
    assert m["judge.parse_rate"] == pytest.approx(13 / 14)
    assert m["judge.mean_score"] == pytest.approx(sum([2, 3, 4, 5, 1, 5, 5, 1, 2, 3, 3, 3, 3]) / 13)
    db.dispose()


@pytest.mark.integration
def test_tiny_model_judges_every_sample_and_signals_compose(db_url: str, config_factory) -> None:
    """Signals can be added later to the same stored samples: nothing is regenerated or duplicated."""
    from selfloop.loop import open_loop, run_iteration

    config = config_factory(db_url, loop={"name": "j", "phases": ["rollout", "judge"], "max_iterations": 1},
                            judge={"signals": ["vote"], "llm_judge": {"k": 2, "max_new_tokens": 12}})
    db = open_database(db_url, init=True)
    open_loop(db, config)
    runtime = Runtime(config)
    run_iteration(db, config, runtime)
    with db.session() as s:
        n_samples = s.scalar(select(func.count()).select_from(Sample))
        sample_tokens = s.execute(select(Sample.id, Sample.token_ids).order_by(Sample.id)).all()
        assert s.scalar(select(func.count()).select_from(Judgment).where(Judgment.kind == "vote")) == n_samples == 18
    # The same samples, now judged by the LLM judge and given confidence scores.
    more = config.model_copy(deep=True)
    more.judge.signals = ["vote", "llm_judge", "confidence"]
    judge_run(_context(db, more, 1, runtime))
    judge_run(_context(db, more, 1, runtime))  # a second run adds nothing
    with db.session() as s:
        counts = dict(s.execute(select(Judgment.kind, func.count()).group_by(Judgment.kind)).all())
        assert counts == {"vote": 18, "llm_judge": 36, "confidence": 18}
        assert s.execute(select(Sample.id, Sample.token_ids).order_by(Sample.id)).all() == sample_tokens
        raw = s.scalars(select(Judgment.raw).where(Judgment.kind == "llm_judge")).all()
        assert all(isinstance(r, str) for r in raw)
    db.dispose()


@pytest.mark.integration
def test_distribution_scoring_gives_every_judgment_its_expected_points(sqlite_url: str, config_factory) -> None:
    """G-Eval scoring on the tiny model: each stored score is the expectation of its stored distribution,
    and that distribution is the judge's own (re-scored here token by token)."""
    import math

    from selfloop.judging.judge import judge_chat, load_template
    from selfloop.judging.scores import justification, verdict_tokens
    from selfloop.loop import open_loop, run_iteration

    config = config_factory(sqlite_url, loop={"name": "g", "phases": ["rollout", "judge"], "max_iterations": 1},
                            judge={"signals": ["llm_judge"], "llm_judge": {"k": 2, "max_new_tokens": 10, "scoring": "distribution"}})
    db = open_database(sqlite_url, init=True)
    open_loop(db, config)
    runtime = Runtime(config)
    run_iteration(db, config, runtime)
    with db.session() as s:
        rows = s.execute(select(Judgment, Sample.text, Sample.prompt_id).join(Sample, Sample.id == Judgment.sample_id)
                         .where(Judgment.kind == "llm_judge").order_by(Judgment.id)).all()
        metrics = metrics_of(s, 1)
    assert len(rows) == 36 and all(j.parse_ok for j, *_ in rows)
    assert metrics["judge.parse_rate"] == 1.0
    masses = []
    for j, _, _ in rows:
        probs = j.details["probs"]
        assert len(probs) == 6 and j.details["scoring"] == "distribution"
        assert j.score == pytest.approx(sum(v * p for v, p in enumerate(probs)) / sum(probs))
        assert 0.0 < j.details["mass"] <= 1.0 and j.details["mass"] == pytest.approx(sum(probs))
        masses.append(j.details["mass"])
    assert metrics["judge.valid_mass"] == pytest.approx(sum(masses) / len(masses))
    # Every judgment's distribution, recomputed from scratch: the justification's text tokenised with the verdict
    # prefix after the judge prompt, one prefill (the judge read it from its decoding cache), and the first one's
    # again token by token.
    from selfloop.db.models import Prompt

    engine = runtime.engine()
    head, values = verdict_tokens(engine.tokenizer)
    template = load_template("judge_additive.txt")
    with db.session() as s:
        prompts = {pid: s.get(Prompt, pid).text for _, _, pid in rows}
    chats, prefixes = [], []
    for j, sample_text, prompt_id in rows:
        text = justification(j.raw)
        chats.append(judge_chat(template, prompts[prompt_id], sample_text))
        prefixes.append(engine.tokenizer.encode(text + "\n" if text else "", add_special_tokens=False) + head)
    fresh = engine.next_token_logprobs(chats, prefixes, values)
    for (j, _, _), lps in zip(rows, fresh, strict=True):
        assert [math.exp(lp) for lp in lps] == pytest.approx(j.details["probs"], rel=1e-3, abs=1e-6)
    for v, tok in enumerate(values):
        lp = engine.score([chats[0]], [prefixes[0] + [tok]])[0][-1]
        assert math.exp(lp) == pytest.approx(rows[0][0].details["probs"][v], rel=1e-3, abs=1e-6)
    db.dispose()


def test_judge_calibration_on_instruction_following_by_hand(sqlite_url: str, config_factory) -> None:
    """No vote signal: correctness comes from the verifiers. Prompt A (lowercase): samples right, wrong,
    right scored 4, 4.5, 2; prompt B (at most 3 words): right, wrong scored 3, 1.
    Within prompts: A (4 vs 4.5) 0, (2 vs 4.5) 0; B (3 vs 1) 1 -> 1/3.
    Across (right 4, 2, 3 vs wrong 4.5, 1): 4>4.5 0, 4>1 1, 2>4.5 0, 2>1 1, 3>4.5 0, 3>1 1 -> 1/2."""
    import json

    config = config_factory(sqlite_url, judge={"signals": ["llm_judge"]})
    db = open_database(sqlite_url, init=True)
    lower = json.dumps({"follow": [["lowercase", None]]})
    short = json.dumps({"follow": [["max_words", 3]]})
    it = store_samples(db, config, [
        ("Describe tea. Write everything in lowercase.", lower, ["tea is warm", "Tea is warm", "a cup of tea"]),
        ("Describe rivers. Use no more than 3 words.", short, ["rivers flow downhill", "rivers flow down to the sea"]),
    ], family="instructions")
    scores = [4.0, 4.5, 2.0, 3.0, 1.0]
    with db.session() as s:
        ids = s.scalars(select(Sample.id).order_by(Sample.id)).all()
        for sample_id, score in zip(ids, scores):
            s.add(Judgment(sample_id=sample_id, kind="llm_judge", judge_index=0, score=score, parse_ok=True))
        s.flush()
        m = calibrate(s, it)
    assert m["judge.llm_pair_accuracy"] == pytest.approx(1 / 3) and m["judge.llm_pair_n"] == 3
    assert m["judge.llm_auc"] == pytest.approx(0.5)
    assert m["judge.llm_pick_accuracy"] == pytest.approx(0.5)  # A picks the wrong 4.5, B the right 3
    assert "judge.label_accuracy" not in m  # nothing voted
    db.dispose()


def test_eft_keeps_judgments_that_agree_with_the_checked_truth(sqlite_url: str, config_factory) -> None:
    """Samples: right (lowercase), wrong, right, right, wrong. Scores 4.4 -> 4 agrees, 3.0 -> 3 disagrees
    (wrong sample above 2.5), 1.6 -> 2 disagrees (right sample at or below 2.5), 2.6 -> 3 agrees,
    0.2 -> 0 agrees. max_examples 2: one right, one wrong, in sample order."""
    import json

    from selfloop.judging.eft import eft_examples

    config = config_factory(sqlite_url, judge={"signals": ["llm_judge"]}, train={"eft": {"enabled": True, "max_examples": 2}})
    db = open_database(sqlite_url, init=True)
    lower = json.dumps({"follow": [["lowercase", None]]})
    it = store_samples(db, config, [
        ("Describe tea. Write everything in lowercase.", lower, ["tea is warm", "Tea is warm", "a cup", "hot tea", "TEA"]),
        ("Describe nothing.", None, ["unknowable"]),  # no known answer: never an example
    ], family="instructions")
    scores = [4.4, 3.0, 1.6, 2.6, 0.2, 5.0]
    raws = ["Fully lowercase and relevant. **Score:", "It is relevant.\nScore: 3", "Short.", "Fine.\nScore:", "Shouty.", "x"]
    with db.session() as s:
        ids = s.scalars(select(Sample.id).order_by(Sample.id)).all()
        for sample_id, score, raw in zip(ids, scores, raws):
            s.add(Judgment(sample_id=sample_id, kind="llm_judge", judge_index=0, score=score, parse_ok=True, raw=raw))
        s.flush()
        rows = eft_examples(s, it, config)
        assert [(r["sample_id"], r["text"], r["reward"]) for r in rows] == [
            (ids[0], "Fully lowercase and relevant.\nScore: 4", 4.0), (ids[4], "Shouty.\nScore: 0", 0.0)]
        config.train.eft.max_examples = 10
        assert [r["sample_id"] for r in eft_examples(s, it, config)] == [ids[0], ids[3], ids[4]]
        config.train.eft.max_examples = 1  # odd: the one goes to the right side
        assert [r["sample_id"] for r in eft_examples(s, it, config)] == [ids[0]]
    db.dispose()


@pytest.mark.integration
def test_a_self_rewarding_loop_with_eft_trains_judge_examples(sqlite_url: str, config_factory) -> None:
    from selfloop.db.models import Example, TrainStep
    from selfloop.loop import open_loop, run_iteration

    config = config_factory(
        sqlite_url, loop={"name": "eft", "phases": ["rollout", "judge", "select", "train"], "max_iterations": 1},
        generation={"tasks": {"kind": "instructions", "levels": [1]}, "prompts_per_iteration": 4, "samples_per_prompt": 2,
                    "max_new_tokens": 12},
        judge={"signals": ["llm_judge"], "llm_judge": {"k": 1, "max_new_tokens": 8, "scoring": "distribution"}},
        train={"algorithm": "dpo", "eft": {"enabled": True, "max_examples": 4, "threshold": 5.0}})
    db = open_database(sqlite_url, init=True)
    open_loop(db, config)
    run_iteration(db, config, Runtime(config))
    with db.session() as s:
        examples = s.scalars(select(Example).order_by(Example.item_index)).all()
        steps = s.scalars(select(TrainStep)).all()
        metrics = metrics_of(s, 1)
    judge = [e for e in examples if e.algorithm == "eft"]
    # threshold 5: every judgment of a wrong sample agrees (the tiny model follows few constraints), so there are some.
    assert judge and len(judge) <= 4 and metrics["select.eft_examples"] == len(judge)
    assert all(e.text.splitlines()[-1].startswith("Score: ") and e.rejected_sample_id is None for e in judge)
    assert all(e.ref_logp is None for e in judge)
    assert steps and any("eft_loss" in (t.metrics or {}) for t in steps)
    db.dispose()


def test_the_not_yet_judged_query_is_a_not_exists_on_the_index(db_url: str, config_factory) -> None:
    """It was `sample_id NOT IN (every judgment of the kind)`, whose cost grows with the whole store."""
    from sqlalchemy.dialects import postgresql, sqlite

    from selfloop.db.queries import unjudged_query, unjudged_samples

    for dialect in (sqlite.dialect(), postgresql.dialect()):
        sql = str(unjudged_query(1, "vote").compile(dialect=dialect)).upper()
        assert "NOT (EXISTS" in sql or "NOT EXISTS" in sql, sql
        assert "NOT IN" not in sql, sql
    config = config_factory(db_url)
    db = open_database(db_url, init=True)
    it = store_samples(db, config, [("What is 1 + 1?", "2", ["2", "3"]), ("What is 2 + 2?", "4", ["4"])])
    with db.session() as s:
        first = s.scalars(select(Sample.id).order_by(Sample.id)).first()
        s.add(Judgment(sample_id=first, kind="vote", judge_index=0, score=1.0, parse_ok=True))
        s.add(Judgment(sample_id=first + 1, kind="llm_judge", judge_index=0, score=1.0, parse_ok=True))
    with db.session() as s:
        assert [r.id for r in unjudged_samples(s, it, "vote")] == [first + 1, first + 2]
        assert [r.id for r in unjudged_samples(s, it, "llm_judge")] == [first, first + 2]
        if db.dialect == "sqlite":
            plan = " ".join(str(r[-1]) for r in s.execute(text("EXPLAIN QUERY PLAN " + str(
                unjudged_query(it, "vote").compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})))))
            assert "SEARCH judgments USING COVERING INDEX" in plan and "(sample_id=? AND kind=?)" in plan, plan
    db.dispose()


def test_the_vote_is_graded_by_the_family_as_its_samples_are(sqlite_url: str, config_factory, monkeypatch) -> None:
    """One rule of correctness: a family whose grader accepts an answer within one of the known answer marks the
    majority 8 right for 9, as it marks the samples saying 8 (votes.correct compared strings until 2026-12-07)."""
    import selfloop.families as families
    from selfloop.families.answers import extract_answer
    from selfloop.families.spec import FamilySpec, Grade

    def near(response, answer, extractors):
        said = extract_answer(response, extractors)
        return Grade(said, said is not None and abs(float(said) - float(answer)) <= 1)

    lenient = FamilySpec(name="near", summary="within one", grade=near)
    real = families.specs()
    monkeypatch.setattr(families, "specs", lambda: {**real, "near": lenient})
    config = config_factory(sqlite_url, judge={"signals": ["vote"]})
    db = open_database(sqlite_url, init=True)
    it = store_samples(db, config, [("What is 4 + 5?", "9", ["8", "The answer is 8", "2"])], family="near")
    judge_run(_context(db, config, it))
    with db.session() as s:
        (vote,) = s.scalars(select(Vote)).all()
        samples = [x.correct for x in s.scalars(select(Sample).order_by(Sample.sample_index))]
    db.dispose()
    assert vote.answer == "8" and vote.correct is True and samples == [True, True, False]


def test_majority_at_k_and_parts_by_the_familys_grader() -> None:
    """majority@k asks the family's grader about the majority answer; an instruction-following answer's per-constraint
    verdicts come from the same grading as its `correct`."""
    from selfloop.engines.base import Completion
    from selfloop.families import family
    from selfloop.phases.evaluate import _majority_correct

    def said(*texts: str) -> list[Completion]:
        return [Completion(t, [], [], "stop") for t in texts]

    value = family("value")
    assert _majority_correct(said("It is 1,000.", "1000", "999"), "1000", value)  # the grader reads 1,000 as 1000
    assert not _majority_correct(said("7", "7", "8"), "8", value)
    follow = '{"follow": [["lowercase", null], ["max_words", 3]]}'
    graded = family("instructions").check("two small words", follow)
    assert graded.correct and graded.parts == (True, True)
    assert family("instructions").check("Too Many Words Here", follow).parts == (False, False)

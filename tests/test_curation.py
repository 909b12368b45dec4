"""The curate phase's filters: IFD by hand on the tiny model, k-center greedy and DEITA's similarity pass on points
whose answer is known, the expected score of a given distribution, the band, a curation that drops everything
(refused before training, naming the filter), select leaving out the dropped prompts, and two iterations of the
tiny loop with every filter, the budget, LIMA's step count and hard-prompt mining."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from sqlalchemy import create_engine, select, text

from selfloop.curation import band, deita, ifd, mods
from selfloop.curation.band_config import BandOptions as BandFilter
from selfloop.curation.ifd_config import IFDOptions as IFDFilter
from selfloop.curation.pool import Candidate, FilterContext, PooledSample
from tests.conftest import make_config, selfloop_cli, store_samples, tiny_yaml


# -- pure rules ---------------------------------------------------------------------------------------------------
def test_ifd_is_the_ratio_of_mean_losses_not_of_perplexities() -> None:
    # conditioned CE: (1 + 3) / 2 = 2; alone: (2 + 2) / 2 = 2 -> 1.0; perplexities would give the same here, so
    # also a case where they differ: conditioned (0.5, 1.5) mean 1.0, alone (4.0) mean 4.0 -> 0.25 (not e^1/e^4)
    assert ifd.ifd_ratio([-1.0, -3.0], [-2.0, -2.0]) == pytest.approx(1.0)
    assert ifd.ifd_ratio([-0.5, -1.5], [-4.0]) == pytest.approx(0.25)
    assert ifd.ifd_ratio([], [-1.0]) is None and ifd.ifd_ratio([-1.0], [0.0]) is None


def test_kcenter_greedy_takes_the_farthest_point_each_time() -> None:
    points = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]])
    # from 0: the farthest is 11 (distance 11); then nearest distances 0, 1, 2, 1, 0: the next is 2 (distance 2)
    assert mods.kcenter_greedy(points, 3, first=0) == ([0, 4, 2], [None, 11.0, 2.0])
    # from 3 (10.0): farthest is 0 (10); then distances 0,1,2,0,1: 2 is next (2)
    assert mods.kcenter_greedy(points, 3, first=3) == ([3, 0, 2], [None, 10.0, 2.0])
    # k above the number of points: every point, ties to the first row (from 1: 11, then 0, 2 and 10 all at 1)
    assert mods.kcenter_greedy(points, 9, first=1) == ([1, 4, 0, 2, 3], [None, 10.0, 1.0, 1.0, 1.0])


def test_deita_keeps_in_score_order_what_is_not_too_similar_to_anything_kept() -> None:
    vectors = torch.tensor([[1.0, 0.0], [0.99, 0.141], [0.0, 1.0], [0.5, 0.866], [0.8, 0.6]])
    # cosines to row 0: 0.990, 0, 0.5, 0.8; row 3 to row 2: 0.866; row 4 to row 3: 0.4 + 0.52 = 0.920
    kept, dropped = deita.greedy_diverse([0, 1, 2, 3, 4], vectors, threshold=0.9, keep=None)
    assert kept == [0, 2, 3]
    assert dropped[1][0] == "similar" and dropped[1][2] == 0 and dropped[1][1] == pytest.approx(0.990, abs=1e-3)
    assert dropped[4][0] == "similar" and dropped[4][2] == 3 and dropped[4][1] == pytest.approx(0.9196, abs=1e-3)
    # the order is the score order: starting from row 4, row 0 (cosine 0.8) is kept and row 3 (0.92) is not
    assert deita.greedy_diverse([4, 0, 3, 2, 1], vectors, 0.9, None)[0] == [4, 0, 2]
    kept, dropped = deita.greedy_diverse([0, 1, 2, 3, 4], vectors, 0.9, keep=2)
    assert kept == [0, 2] and dropped[3] == ("full", None, None)


def test_the_expected_score_of_a_given_distribution() -> None:
    probs = [0.1, 0.2, 0.3, 0.2, 0.1, 0.1]
    # 0.1 + 0.4 + 0.9 + 0.8 + 0.5 + 0.6
    assert deita.expected_value([math.log(p) for p in probs]) == pytest.approx(3.3)
    # the six values' mass need not be one: renormalised over them (the softmax of their logits)
    assert deita.expected_value([math.log(p * 0.25) for p in probs]) == pytest.approx(3.3)


def _candidates(shares: list[float | None]) -> list[Candidate]:
    return [Candidate(i + 1, f"q{i}", [PooledSample(10 * i, "a", [5], None)], s, None) for i, s in enumerate(shares)]


def test_the_band_drops_agreement_and_noise_and_moves_with_the_iterations() -> None:
    ctx = FilterContext(None, None, None, number=1, seed=0)
    out = band.curate(_candidates([1.0, 0.75, 0.5, 0.25, None, 0.875]), BandFilter(), ctx)
    assert out.kept == [2, 6]
    reasons = {r["prompt_id"]: r["reason"] for r in out.rows}
    assert "every sample agrees" in reasons[1] and "no clear majority" in reasons[3] and "no vote" in reasons[5]
    # shift -0.25 a iteration: at iteration 3 the band is (0.0, 0.5): the hard prompts
    options = BandFilter(above=0.5, below=1.0, shift=-0.25)
    assert band.bounds(options, 3) == (0.0, 0.5)
    assert band.curate(_candidates([1.0, 0.75, 0.5, 0.25]), options, FilterContext(None, None, None, 3, 0)).kept == [4]
    assert band.bounds(BandFilter(above=0.5, below=0.9, shift=0.5), 3) == (1.0, 1.0)  # kept within 0..1


# -- on the tiny model --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(tiny_model):
    from selfloop.engines.hf import HFEngine

    return HFEngine(tiny_model.path, batch_size=4)


def _ce(model, context: list[int], answer: list[int]) -> float:
    """Mean cross-entropy of `answer`'s tokens after `context`, by a plain forward pass."""
    ids = torch.tensor([context + answer])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    return -sum(logps[len(context) - 1 + i, t].item() for i, t in enumerate(answer)) / len(answer)


def test_ifd_by_hand_on_the_tiny_model(engine) -> None:
    from selfloop.engines.chat import prompt_ids, user_chat

    tok = engine.tokenizer
    questions = ["What is 2 + 3?", "Name a colour of the sky."]
    answers = [tok.encode("The answer is 5.", add_special_tokens=False), tok.encode("Blue, on a clear day.", add_special_tokens=False)]
    pool = [Candidate(i + 1, q, [PooledSample(100 + i, "", a, None)], None, None) for i, (q, a) in enumerate(zip(questions, answers))]
    by_hand = {}
    for c, a in zip(pool, answers):
        by_hand[c.prompt_id] = (_ce(engine.base, prompt_ids(tok, user_chat(c.text)), a)
                                / _ce(engine.base, prompt_ids(tok, user_chat("")), a))
    ctx = FilterContext(engine, None, None, 1, 0)
    out = ifd.curate(pool, IFDFilter(keep_fraction=0.5, drop_above_one=False), ctx)
    scores = {r["prompt_id"]: r["score"] for r in out.rows if r["sample_id"] is None}
    assert scores == pytest.approx(by_hand, rel=1e-4)
    assert {r["sample_id"]: r["score"] for r in out.rows if r["sample_id"]} == pytest.approx({100: by_hand[1], 101: by_hand[2]}, rel=1e-4)
    assert out.kept == [max(by_hand, key=by_hand.get)]  # the top half of two: the higher IFD
    out = ifd.curate(pool, IFDFilter(keep_fraction=1.0), ctx)
    assert set(out.kept) == {p for p, v in by_hand.items() if v <= 1.0}
    assert all("> 1" in r["reason"] for r in out.rows if r["kept"] is False)


def test_deita_and_mods_score_with_the_policy(engine) -> None:
    from selfloop.curation.deita_config import DeitaOptions as DeitaFilter
    from selfloop.curation.mods_config import ModsOptions as ModsFilter
    from selfloop.engines.chat import user_chat

    texts = ["What is 2 + 3?", "What is 2 + 4?", "Write a poem about the sea.", "List three prime numbers.",
             "Explain why the sky is blue."]
    pool = [Candidate(i + 1, t, [PooledSample(100 + 2 * i + j, f"answer {j}", [5, 6], None) for j in range(2)],
                      None, 2.0 + i * 0.5) for i, t in enumerate(texts)]
    ctx = FilterContext(engine, None, None, 1, seed=3)
    out = deita.curate(pool, DeitaFilter(threshold=0.99, samples=2), ctx)
    prompt_rows = [r for r in out.rows if r["sample_id"] is None]
    quality = {}
    for r in out.rows:
        if r["sample_id"] is not None:
            assert 1.0 <= r["score"] <= 6.0
            quality.setdefault(r["prompt_id"], []).append(r["score"])
    for r in prompt_rows:  # score = complexity x mean quality, complexity an expected value in 1..6
        complexity = r["score"] / (sum(quality[r["prompt_id"]]) / 2)
        assert 1.0 <= complexity <= 6.0
    # what was kept passes the similarity cut against every other kept prompt, by a separate embedding
    emb = torch.nn.functional.normalize(torch.tensor(engine.embed([user_chat(t) for t in texts])), dim=1)
    kept = [p - 1 for p in out.kept]
    assert all(float(emb[a] @ emb[b]) <= 0.99 for i, a in enumerate(kept) for b in kept[i + 1:])
    # the ranking is by score, best first
    score = {r["prompt_id"]: r["score"] for r in prompt_rows}
    assert [score[p] for p in out.kept] == sorted((score[p] for p in out.kept), reverse=True)

    out = mods.curate(pool, ModsFilter(centers=2, necessity_below=3.0), ctx)
    centres = [r["prompt_id"] for r in out.rows if r["kept"] and "k-center" in r["reason"]]
    necessary = [r["prompt_id"] for r in out.rows if r["kept"] and "necessity" in r["reason"]]
    assert len(centres) == 2 and out.kept == centres + necessary
    # judge means 2.0, 2.5, 3.0, 3.5, 4.0: prompts 1 and 2 are below 3.0
    assert set(necessary) == {1, 2} - set(centres)
    assert mods.curate(pool, ModsFilter(centers=2, necessity_below=3.0), ctx).kept == out.kept  # seeded


# -- the phase, on a store --------------------------------------------------------------------------------------
def _phase_ctx(db, config, iteration_id: int, phase: str):
    from selfloop.db.models import Iteration, PhaseRun
    from selfloop.phases.context import PhaseContext
    from selfloop.runtime import Runtime

    with db.session() as s:
        run = PhaseRun(iteration_id=iteration_id, phase=phase, status="running", attempts=1)
        s.add(run)
        s.flush()
        loop_id = s.get(Iteration, iteration_id).loop_id
        return PhaseContext(db, config, Runtime(config), loop_id, iteration_id, 1, phase, run.id, None)


def _store(tmp_path: Path, shares: list[float], **sections):
    from selfloop.db.engine import open_database
    from selfloop.db.models import Prompt, Vote

    config = make_config(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", **sections)
    db = open_database(config.database_url(), init=True)
    it = store_samples(db, config, [(f"What is {i} + 1?", str(i + 1), [str(i + 1), "7", str(i + 1)]) for i in range(len(shares))],
                       family="arithmetic")
    with db.session() as s:
        for (pid,), share in zip(s.execute(select(Prompt.id).where(Prompt.iteration_id == it).order_by(Prompt.item_index)), shares):
            s.add(Vote(prompt_id=pid, answer="x", share=share, n_valid=3, n_votes=3, tie=False))
    return db, config, it


def test_a_curation_that_drops_every_prompt_fails_naming_the_filter(tmp_path: Path) -> None:
    from selfloop.db.models import Curation, PhaseRun
    from selfloop.errors import SelfloopError
    from selfloop.phases import curate

    db, config, it = _store(tmp_path, [1.0, 1.0, 1.0], curate={"filters": ["band"]})
    ctx = _phase_ctx(db, config, it, "curate")
    with pytest.raises(SelfloopError, match=r"curate: filter 'band' \(curate.filters\[0\]\) dropped all 3 prompts") as err:
        curate.run(ctx)
    assert "\n" not in str(err.value) and "every sample agrees" in str(err.value)
    with db.session() as s:  # nothing stored, the phase not done: training never sees a half-curated iteration
        assert s.scalar(select(Curation.id)) is None and s.get(PhaseRun, ctx.phase_run_id).status == "running"
    db.dispose()


def test_select_leaves_out_the_prompts_curation_dropped(tmp_path: Path) -> None:
    from selfloop.db.curation import dropped_prompts, prompt_curation
    from selfloop.db.models import Example, Metric, PhaseRun
    from selfloop.phases import curate
    from selfloop.phases import select as select_phase

    db, config, it = _store(tmp_path, [1.0, 0.75, 0.5, 0.75, 0.625], curate={"filters": ["band"], "budget": 2})
    curate.run(_phase_ctx(db, config, it, "curate"))
    with db.session() as s:
        dropped = dropped_prompts(s, it)
        pids = [p for p, in s.execute(text("SELECT id FROM prompts ORDER BY item_index"))]
        assert dropped == {pids[0], pids[2], pids[4]}  # agreement, no majority, and the budget's third
        assert [row[0] for row in prompt_curation(s, pids[4])] == ["band", "budget"]
        assert prompt_curation(s, pids[4])[1][2] is False and "beyond curate.budget (2)" in prompt_curation(s, pids[4])[1][3]
        assert prompt_curation(s, pids[0]) == [("band", 1.0, False, prompt_curation(s, pids[0])[0][3])]
    ctx = _phase_ctx(db, config, it, "select")
    select_phase.run(ctx)
    with db.session() as s:
        trained = set(s.scalars(select(Example.prompt_id)))
        metrics = dict(s.execute(select(Metric.name, Metric.value).where(Metric.iteration_id == it)).all())
        assert s.get(PhaseRun, ctx.phase_run_id).status == "done"
    assert trained == {pids[1], pids[3]}
    assert metrics["select.uncurated_examples"] == 15 and metrics["select.examples"] == 6  # rlsc: every sample
    assert metrics["curate.prompts"] == 5 and metrics["curate.band.kept"] == 3 and metrics["curate.kept"] == 2
    db.dispose()


def test_hard_prompts_are_the_failed_and_the_disputed(tmp_path: Path) -> None:
    from selfloop.config.sections import MineHardConfig
    from selfloop.db.curation import hard_prompts

    db, config, it = _store(tmp_path, [1.0, 0.4, 1.0])
    with db.session() as s:
        s.execute(text("UPDATE samples SET correct = 0 WHERE prompt_id = (SELECT id FROM prompts WHERE item_index = 2)"))
        loop_id = s.execute(text("SELECT loop_id FROM iterations")).scalar()
        hard = hard_prompts(s, loop_id, 1, MineHardConfig(enabled=True))
    # prompt 1: share 0.4 (disputed); prompt 2: no sample right (failed); prompt 0: agreed and 2 of 3 right
    assert hard == [("hard:1.task.1", "What is 1 + 1?"), ("hard:1.task.2", "What is 2 + 1?")]
    db.dispose()


# -- the loop ---------------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_two_iterations_with_every_filter_the_budget_lima_and_mining(tmp_path: Path, run_cli) -> None:
    from selfloop.training.loop import default_steps

    url = f"sqlite:///{tmp_path / 'loop.db'}"
    config = tiny_yaml(
        tmp_path, url, loop__max_iterations=2, train__algorithm="dpo",
        judge__llm_judge={"k": 1, "max_new_tokens": 0, "scoring": "distribution"},
        self_instruct__mine_hard={"enabled": True, "max_vote_share": 1.0},
        curate={"filters": ["band", "ifd", "deita", "mods"], "budget": 3, "same_steps": True,
                "band": {"above": 0.0, "below": 1.0}, "ifd": {"keep_fraction": 1.0, "drop_above_one": False},
                "deita": {"threshold": 1.0}, "mods": {"centers": 3, "necessity_below": None}})
    out = selfloop_cli("run", "--config", str(config))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "curate: ifd kept" in out.stderr
    with create_engine(url).connect() as conn:
        phases = conn.execute(text("SELECT count(*) FROM phase_runs WHERE phase = 'curate' AND status = 'done'")).scalar()
        decided = conn.execute(text("SELECT i.number, c.filter, count(*) FROM curations c JOIN iterations i ON i.id = "
                                    "c.iteration_id WHERE c.sample_id IS NULL GROUP BY 1, 2")).all()
        per_sample = conn.execute(text("SELECT count(*) FROM curations WHERE sample_id IS NOT NULL")).scalar()
        metrics = {(n, k): v for n, k, v in conn.execute(text(
            "SELECT i.number, m.name, m.value FROM metrics m JOIN iterations i ON i.id = m.iteration_id"))}
        outside = conn.execute(text("SELECT count(*) FROM examples e WHERE EXISTS (SELECT 1 FROM curations c WHERE "
                                    "c.prompt_id = e.prompt_id AND c.kept = false)")).scalar()
        steps = dict(conn.execute(text("SELECT i.number, count(*) FROM train_steps t JOIN iterations i ON "
                                       "i.id = t.iteration_id GROUP BY 1")).all())
    assert phases == 2 and per_sample > 0 and outside == 0
    counts = {(n, f): c for n, f, c in decided}
    for n in (1, 2):
        assert counts[(n, "band")] == metrics[(n, "curate.prompts")]
        assert metrics[(n, "curate.kept")] <= 3 and metrics[(n, "select.examples")] <= metrics[(n, "select.uncurated_examples")]
        # LIMA: each iteration trains the uncurated examples' step count (batch 4, one epoch), however few are kept.
        from selfloop.config import load_config

        assert steps[n] == metrics[(n, "train.steps")] == default_steps(
            int(metrics[(n, "select.uncurated_examples")]), load_config(config).train)
        assert all(metrics[(n, f"curate.{f}.seconds")] >= 0 for f in ("band", "ifd", "deita", "mods"))
    assert metrics[(1, "synthesize.hard_seeds")] == 0 and metrics[(2, "synthesize.hard_seeds")] > 0
    # in SQL, read-only, as a user asks "why was this prompt not trained on?"
    code, stdout, _ = run_cli("sql", "--db", url, "--format", "json",
                              "SELECT filter, kept, reason FROM curations WHERE kept = 0 AND sample_id IS NULL LIMIT 1")
    rows = json.loads(stdout)
    assert code == 0
    assert rows and rows[0]["reason"]

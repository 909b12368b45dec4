"""Example selection of each algorithm, on stored samples and judgments made by hand."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from selfloop.algorithms import trainer
from selfloop.db.engine import open_database
from selfloop.db.models import Judgment, Prompt, Sample, Vote
from selfloop.phases.judge import run as judge_run
from tests.conftest import store_samples
from tests.test_judge_phase import _context


def _judge_scores(db, scores: dict[tuple[int, int], list[float | None]]) -> None:
    """LLM-judge rows for (prompt item, sample index) -> scores (None: unparsed)."""
    with db.session() as s:
        ids = {(p, i): sid for sid, p, i in s.execute(
            select(Sample.id, Prompt.item_index, Sample.sample_index).join(Prompt, Prompt.id == Sample.prompt_id))}
        for key, values in scores.items():
            for j, v in enumerate(values):
                s.add(Judgment(sample_id=ids[key], kind="llm_judge", judge_index=j, score=v, parse_ok=v is not None))


def _index(db) -> dict[int, tuple[int, int]]:
    with db.session() as s:
        return {sid: (p, i) for sid, p, i in s.execute(
            select(Sample.id, Prompt.item_index, Sample.sample_index).join(Prompt, Prompt.id == Sample.prompt_id))}


@pytest.fixture
def db(sqlite_url: str):
    database = open_database(sqlite_url, init=True)
    yield database
    database.dispose()


def test_dpo_pairs_best_against_worst(db, config_factory) -> None:
    config = config_factory(db.url, train={"algorithm": "dpo"})
    it = store_samples(db, config, [("p0", None, ["a", "b", "c"]), ("p1", None, ["a", "b"]), ("p2", None, ["a", "b"]),
                                    ("p3", None, ["a", "b", "c"])])
    _judge_scores(db, {
        (0, 0): [3, 3], (0, 1): [5, 4], (0, 2): [1, None],  # means 3, 4.5, 1 -> chosen 1, rejected 2
        (1, 0): [4], (1, 1): [None],  # only one validly scored sample: dropped
        (2, 0): [2, 3], (2, 1): [3, 2],  # tie: dropped
        (3, 0): [2], (3, 1): [4], (3, 2): [4],  # highest tie between 1 and 2: the first (1) is chosen
    })
    idx = _index(db)
    with db.session() as s:
        rows = trainer("dpo").select(s, it, config)
    got = [(idx[r["sample_id"]], idx[r["rejected_sample_id"]], r["reward"]) for r in rows]
    assert got == [((0, 1), (0, 2), 3.5), ((3, 1), (3, 0), 2.0)]
    config.train.dpo.min_score_gap = 3.0
    with db.session() as s:
        assert len(trainer("dpo").select(s, it, config)) == 1


def test_spin_pairs_ground_truth_against_the_policy(db, config_factory) -> None:
    config = config_factory(db.url, train={"algorithm": "spin"})
    it = store_samples(db, config, [("p0", None, ["gen a", "gen b"]), ("p1", None, ["gen c"])])
    with db.session() as s:
        s.execute(Prompt.__table__.update().where(Prompt.item_index == 0).values(reference="the real answer"))
    idx = _index(db)
    with db.session() as s:
        rows = trainer("spin").select(s, it, config)
    assert [(r["text"], idx[r["rejected_sample_id"]]) for r in rows] == [("the real answer", (0, 0))]


def test_ttrl_rewards_majority_agreement_over_the_voters_and_trains_n_train(db, config_factory) -> None:
    config = config_factory(db.url, train={"algorithm": "ttrl", "ttrl": {"n_train": 2}},
                            judge={"vote": {"voters": 3}})
    it = store_samples(db, config, [
        ("p0", None, ["5", "5", "6", "6"]),  # first 3 vote: 5 wins; trained: samples 0, 1 -> rewards 1, 1: all equal, skipped
        ("p1", None, ["7", "8", "8", "7"]),  # vote over 7, 8, 8: 8; trained 0, 1 -> rewards 0, 1
    ])
    judge_run(_context(db, config, it))
    idx = _index(db)
    with db.session() as s:
        rows = trainer("ttrl").select(s, it, config)
    assert [(idx[r["sample_id"]], r["reward"]) for r in rows] == [((1, 0), 0.0), ((1, 1), 1.0)]
    assert [r["weight"] for r in rows] == pytest.approx([-0.999998, 0.999998], abs=1e-6)
    # One label: the one stored by the judge phase (and measured by calibration) is the one trained on.
    with db.session() as s:
        labels = dict(s.execute(select(Prompt.text, Vote.answer).join(Vote, Vote.prompt_id == Prompt.id)).all())
    assert labels == {"p0": "5", "p1": "8"}


def test_old_configs_n_vote_is_the_judges_voters() -> None:
    from selfloop.config import validate_config

    config = validate_config({"loop": {"name": "a"}, "generation": {"samples_per_prompt": 8},
                              "train": {"algorithm": "ttrl", "ttrl": {"n_vote": 6, "n_train": 4}}})
    assert config.judge.vote.voters == 6 and config.train.ttrl.n_train == 4


def test_a_config_naming_only_the_algorithm_is_valid() -> None:
    from selfloop.algorithms import specs
    from selfloop.config import validate_config

    assert {"dpo", "spin", "ttrl", "rlsc", "rest", "orpo", "rrhf"} <= set(specs())
    for algorithm in specs():
        assert validate_config({"loop": {"name": "a"}, "train": {"algorithm": algorithm}}).train.algorithm == algorithm


def test_rest_keeps_rewarded_samples_up_to_k(db, config_factory) -> None:
    config = config_factory(db.url, train={"algorithm": "rest", "rest": {"max_per_prompt": 2}})
    it = store_samples(db, config, [
        ("What is 2 + 3?", "5", ["5", "6", "6", "5", "5"]),  # truth known: samples 0, 3 (K = 2 of 3 correct)
        ("Say a number", None, ["4", "9", "9"]),  # no truth: the majority (9) rewards 1, 2
    ])
    judge_run(_context(db, config, it))
    idx = _index(db)
    with db.session() as s:
        assert [idx[r["sample_id"]] for r in trainer("rest").select(s, it, config)] == [(0, 0), (0, 3), (1, 1), (1, 2)]
    config.train.rest.reward = "majority"  # the majority of prompt 0 is 5 as well
    with db.session() as s:
        assert [idx[r["sample_id"]] for r in trainer("rest").select(s, it, config)] == [(0, 0), (0, 3), (1, 1), (1, 2)]


def test_rest_rewards_the_known_answer_where_the_majority_is_wrong(db, config_factory) -> None:
    """The majority (6) is wrong: 'auto' and 'ground_truth' reward the correct samples, 'majority' the majority's."""
    config = config_factory(db.url, train={"algorithm": "rest", "rest": {"max_per_prompt": 3}})
    it = store_samples(db, config, [("What is 2 + 3?", "5", ["6", "5", "6", "6", "5"])])
    judge_run(_context(db, config, it))
    idx = _index(db)
    for mode, expected in (("auto", [(0, 1), (0, 4)]), ("ground_truth", [(0, 1), (0, 4)]),
                           ("majority", [(0, 0), (0, 2), (0, 3)])):
        config.train.rest.reward = mode
        with db.session() as s:
            assert [idx[r["sample_id"]] for r in trainer("rest").select(s, it, config)] == expected, mode


def test_rlsc_takes_every_sample_with_its_rollout_logprob(db, config_factory) -> None:
    config = config_factory(db.url, train={"algorithm": "rlsc"})
    it = store_samples(db, config, [("p0", None, ["a", "b"]), ("p1", None, ["c"])])
    with db.session() as s:
        rows = trainer("rlsc").select(s, it, config)
    assert len(rows) == 3 and all(r["sampling_logp"] == -2.0 and "ref_logp" not in r for r in rows)


def test_emft_takes_the_first_samples_of_each_prompt_unjudged(db, config_factory) -> None:
    config = config_factory(db.url, train={"algorithm": "emft"})
    it = store_samples(db, config, [("p0", None, ["a", "b", "c"]), ("p1", None, ["d"])])
    idx = _index(db)
    with db.session() as s:  # no judge phase ran: EM-FT reads the samples alone
        assert [idx[r["sample_id"]] for r in trainer("emft").select(s, it, config)] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    config.train.emft.max_per_prompt = 2
    with db.session() as s:
        rows = trainer("emft").select(s, it, config)
    assert [idx[r["sample_id"]] for r in rows] == [(0, 0), (0, 1), (1, 0)]
    assert all(set(r) == {"prompt_id", "sample_id"} for r in rows)


def test_rrhf_ranks_each_prompts_scored_samples(db, config_factory) -> None:
    config = config_factory(db.url, train={"algorithm": "rrhf"})
    it = store_samples(db, config, [("p0", None, ["a", "b", "c", "d"]), ("p1", None, ["a", "b"]),
                                    ("p2", None, ["a", "b", "c"])])
    _judge_scores(db, {
        (0, 0): [2, 3], (0, 1): [5, 4], (0, 2): [None], (0, 3): [4, 5],  # means 2.5, 4.5, -, 4.5: 1 then 3 (tie: sample order), 0
        (1, 0): [3], (1, 1): [3],  # all tied: nothing to rank, dropped
        (2, 0): [1], (2, 1): [None], (2, 2): [None],  # one scored sample: dropped
    })
    idx = _index(db)
    with db.session() as s:
        rows = trainer("rrhf").select(s, it, config)
    assert [[(idx[c["sample_id"]], c["score"]) for c in r["candidates"]] for r in rows] == \
        [[((0, 1), 4.5), ((0, 3), 4.5), ((0, 0), 2.5)]]
    assert rows[0]["reward"] == 2.0
    config.train.rrhf.min_score_gap = 2.0
    with db.session() as s:
        assert trainer("rrhf").select(s, it, config) == []


def test_raft_keeps_the_best_sample_or_the_top_share_and_discards_by_rule(db, config_factory) -> None:
    config = config_factory(db.url, train={"algorithm": "raft", "raft": {"discard_patterns": ["#"]}})
    it = store_samples(db, config, [("p0", None, ["a", "b #", "c"]), ("p1", None, ["d", "e", "f"]),
                                    ("p2", None, ["g", "h"])])
    _judge_scores(db, {
        (0, 0): [2, 3], (0, 1): [5, 5], (0, 2): [4],  # 'b #' scores best but matches the discard rule: c (4) kept
        (1, 0): [3], (1, 1): [3], (1, 2): [1],  # a tie for best: the first (d)
        (2, 0): [None], (2, 1): [None],  # no valid score: nothing kept
    })
    idx = _index(db)
    with db.session() as s:
        local = trainer("raft").select(s, it, config)
    assert [(idx[r["sample_id"]], r["reward"]) for r in local] == [((0, 2), 4.0), ((1, 0), 3.0)]
    config.train.raft.mode, config.train.raft.top_fraction = "top", 0.4  # int(8 samples * 0.4) = 3, best first
    with db.session() as s:
        top = trainer("raft").select(s, it, config)
    assert sorted(idx[r["sample_id"]] for r in top) == [(0, 2), (1, 0), (1, 1)]  # 4, then the tie of 3s
    config.train.raft.discard_patterns = []
    with db.session() as s:
        assert idx[trainer("raft").select(s, it, config)[0]["sample_id"]] == (0, 1)  # without the rule, 'b #' wins


def test_rso_rejection_sampling_with_fixed_draws_by_hand() -> None:
    from selfloop.algorithms.rso import first_round_pairs, rejection_sample

    # rewards 5, 4, 3, 5.0 (ids 1-4), beta 0.5. Pass 1, r_max 5: id 1 accepted (u < 1 always); id 2: u 0.2 <
    # exp(-2) = 0.135? no; id 3: u 0.01 < exp(-4) = 0.018: accepted; id 4: u 0.99 < 1: accepted.
    # Pass 2, left {2}, r_max 4: u 0.5 < 1: accepted. M = 4 reached.
    draws = iter([0.7, 0.2, 0.01, 0.99, 0.5])
    accepted = rejection_sample([(1, 5.0), (2, 4.0), (3, 3.0), (4, 5.0)], 4, 0.5, lambda: next(draws))
    assert accepted == [(1, 5.0), (3, 3.0), (4, 5.0), (2, 4.0)]
    assert first_round_pairs(accepted) == [(1, 3, 2.0), (4, 2, 1.0)]
    # stops inside a pass once M are accepted, and a tie makes no pair
    draws = iter([0.0] * 10)
    assert rejection_sample([(1, 2.0), (2, 2.0), (3, 1.0)], 2, 0.5, lambda: next(draws)) == [(1, 2.0), (2, 2.0)]
    assert first_round_pairs([(1, 2.0), (2, 2.0)]) == []
    # fewer candidates than M: every one, eventually
    draws = iter([0.9, 0.9, 0.0, 0.0])
    assert [k for k, _ in rejection_sample([(1, 1.0), (2, 0.0)], 8, 0.5, lambda: next(draws))] == [1, 2]


def test_rso_selection_is_seeded_and_pairs_judged_samples(db, config_factory) -> None:
    config = config_factory(db.url, train={"algorithm": "rso", "rso": {"num_accept": 4, "beta": 1.0e6}})
    it = store_samples(db, config, [("p0", None, ["a", "b", "c", "d"])])
    _judge_scores(db, {(0, 0): [1], (0, 1): [2], (0, 2): [3], (0, 3): [4]})
    idx = _index(db)
    with db.session() as s:
        rows = trainer("rso").select(s, it, config)
        again = trainer("rso").select(s, it, config)
    assert rows == again and len(rows) == 2  # beta 1e6: all four accepted in order, paired 0-1 and 2-3
    assert [(idx[r["sample_id"]], idx[r["rejected_sample_id"]], r["reward"]) for r in rows] == \
        [((0, 1), (0, 0), 1.0), ((0, 3), (0, 2), 1.0)]


def test_rtuning_labels_sure_by_the_checked_majority_and_trains_the_known_answer(db, config_factory) -> None:
    """'checked': sure where the majority equals the known answer; the known answer is trained for unsure prompts
    too (prompt 1's majority 6 is wrong: the target still says 5); a prompt without a known answer is skipped."""
    from selfloop.algorithms.rtuning_config import QUESTION

    config = config_factory(db.url, train={"algorithm": "rtuning"})
    it = store_samples(db, config, [
        ("What is 2 + 3?", "5", ["5", "5", "6", "5"]),
        ("What is 1 + 4?", "5", ["6", "6", "5", "7"]),
        ("Say a number", None, ["4", "9", "9"]),
    ])
    judge_run(_context(db, config, it))
    with db.session() as s:
        rows = trainer("rtuning").select(s, it, config)
        items = {p: i for p, i in s.execute(select(Prompt.id, Prompt.item_index))}
    assert [(items[r["prompt_id"]], r["text"], r["reward"]) for r in rows] == [
        (0, f"5. {QUESTION} I am sure.", 1.0), (1, f"5. {QUESTION} I am unsure.", 0.0)]


def test_rtuning_u_ranks_every_prompt_by_answer_entropy(db, config_factory) -> None:
    """'entropy': the lower half of the prompts by the entropy of their answers is sure, the majority trained.
    Entropies: prompt 0 [3,3,3,3] -> 0; prompt 1 [3,3,4,None] -> 1.040; prompt 2 [7,8,8,9] -> 1.040; prompt 3
    [2,2,2,1] -> 0.562. Lower half (2 of 4): prompts 0 and 3."""
    config = config_factory(db.url, train={"algorithm": "rtuning", "rtuning": {"label": "entropy"}})
    it = store_samples(db, config, [
        ("Q0", None, ["3", "3", "3", "3"]), ("Q1", None, ["3", "3", "4", "none here"]),
        ("Q2", None, ["7", "8", "8", "9"]), ("Q3", None, ["2", "2", "2", "1"]),
    ])
    judge_run(_context(db, config, it))
    with db.session() as s:
        rows = trainer("rtuning").select(s, it, config)
        items = {p: i for p, i in s.execute(select(Prompt.id, Prompt.item_index))}
    got = [(items[r["prompt_id"]], r["text"].split(".")[0], r["reward"]) for r in rows]
    assert got == [(0, "3", 1.0), (1, "3", 0.0), (2, "8", 0.0), (3, "2", 1.0)]


def test_cut_negatives_carry_their_lowest_judgment_and_positives_are_down_sampled(db, config_factory) -> None:
    from selfloop.algorithms.cut_config import TEMPLATE

    config = config_factory(db.url, train={"algorithm": "cut"})
    it = store_samples(db, config, [("Write a haiku.", None, ["a", "b", "c"]), ("Name a river.", None, ["d", "e"])])
    judged = {(0, 0): [(4, "Fine.\nScore: 4"), (5, "Great.\nScore: 5")],  # mean 4.5: positive
              (0, 1): [(3, "Meh.\nScore: 3"), (1, "Not a haiku.\nScore: 1")],  # mean 2: negative, the score-1 reason
              (0, 2): [(2, "Score: 2")],  # negative without a reason: skipped
              (1, 0): [(3, "Too long.\nScore: 3"), (3, "Other.\nScore: 3")],  # a tie: the first reason
              (1, 1): [(None, "unparsed")]}  # no valid score: not judged
    with db.session() as s:
        ids = {(p, i): sid for sid, p, i in s.execute(
            select(Sample.id, Prompt.item_index, Sample.sample_index).join(Prompt, Prompt.id == Sample.prompt_id))}
        for key, values in judged.items():
            for j, (score, raw) in enumerate(values):
                s.add(Judgment(sample_id=ids[key], kind="llm_judge", judge_index=j, score=score, parse_ok=score is not None, raw=raw))
    idx = _index(db)
    with db.session() as s:
        rows = trainer("cut").select(s, it, config)
    assert [(idx[r["sample_id"]], r.get("context"), r["reward"]) for r in rows] == [
        ((0, 1), TEMPLATE.format(instruction="Write a haiku.", judgment="Not a haiku."), 2.0),
        ((1, 0), TEMPLATE.format(instruction="Name a river.", judgment="Too long."), 3.0)]  # int(2 * 0.25) = 0 positives
    config.train.cut.positive_ratio = 1.0
    with db.session() as s:
        rows = trainer("cut").select(s, it, config)
    assert [idx[r["sample_id"]] for r in rows] == [(0, 1), (1, 0), (0, 0)] and "context" not in rows[2]


def test_coin_keeps_rests_samples_with_a_paraphrase_of_their_prompt(db, config_factory) -> None:
    from sqlalchemy import update

    from selfloop.algorithms.coin import paraphrases
    from selfloop.families import arithmetic

    config = config_factory(db.url, train={"algorithm": "coin", "coin": {"max_per_prompt": 1}},
                            generation={"tasks": {"kind": "arithmetic", "levels": [1]}})
    p0, p1 = arithmetic.problems([1], "train", "seen")[:2]
    it = store_samples(db, config, [(p0.prompt, p0.answer, ["0", p0.answer, p0.answer]),  # samples 1 (K = 1)
                                    (p1.prompt, p1.answer, ["0", "0", "1"]),  # none right: nothing kept
                                    ("Say a number", None, ["4", "9", "9"])],  # no family: majority 9, no paraphrase
                       family="arithmetic")
    with db.session() as s:
        for p in (p0, p1):
            s.execute(update(Prompt).where(Prompt.text == p.prompt).values(task_key=p.key))
    judge_run(_context(db, config, it))
    idx = _index(db)
    with db.session() as s:
        rows = trainer("coin").select(s, it, config)
    expected = paraphrases([(0, "arithmetic", p0.key, p0.prompt)], [1]).get(0)
    assert [(idx[r["sample_id"]], r.get("context")) for r in rows] == [((0, 1), expected), ((2, 1), None)]

"""Three splits per family by value (train prompts; the held-out split's fixed validation and test halves), each
with its unseen-wording twin; no decision may use a test suite."""

from __future__ import annotations

import pytest

from selfloop.config import SuiteConfig, validate_config
from selfloop.errors import ConfigError
from selfloop.evals.suites import load_suite
from selfloop.tasks import load_pool


@pytest.mark.parametrize(("kind", "levels"), [("arithmetic", [1, 2, 3]), ("instructions", [1, 2])])
def test_validation_and_test_halve_the_held_out_split_and_never_meet_training(kind: str, levels: list[int]) -> None:
    def suite(split: str, phrasing: str = "seen") -> list:
        return load_suite(SuiteConfig(name=f"{split}-{phrasing}", kind=kind, levels=levels, size=100_000,
                                      split=split, phrasing=phrasing))

    whole, validation, test = suite("eval"), suite("validation"), suite("test")
    assert not {i.prompt for i in validation} & {i.prompt for i in test}
    assert sorted(i.prompt for i in validation + test) == sorted(i.prompt for i in whole)
    assert 0.4 < len(validation) / len(whole) < 0.6
    for split, items in (("validation", validation), ("test", test)):
        twin = suite(split, "unseen")  # the same problems in held-out words
        assert [i.answer for i in twin] == [i.answer for i in items]
        assert sum(a.prompt != b.prompt for a, b in zip(twin, items)) > len(items) // 2
    from selfloop.config import TaskSource

    training = {t.prompt for t in load_pool(TaskSource(kind=kind, levels=levels))}
    training |= {t.prompt for t in load_pool(TaskSource(kind=kind, levels=levels, phrasing="varied"))} if kind == "arithmetic" else set()
    assert not training & {i.prompt for i in whole}


def test_no_decision_may_use_a_test_suite() -> None:
    suites = [{"name": "val", "kind": "arithmetic", "split": "validation"}, {"name": "test", "kind": "arithmetic", "split": "test"},
              {"name": "test-unseen", "kind": "arithmetic", "split": "test", "phrasing": "unseen"}]
    ok = validate_config({"loop": {"name": "a"}, "eval": {"suites": suites, "main_metric": "val/greedy_accuracy"}})
    assert [s.split for s in ok.eval.suites] == ["validation", "test", "test"]
    with pytest.raises(ConfigError, match="suite 'test' is a test split, which no decision may use"):
        validate_config({"loop": {"name": "a"}, "eval": {"suites": suites, "main_metric": "test/greedy_accuracy"}})
    with pytest.raises(ConfigError, match="split applies to the built-in generators"):
        validate_config({"loop": {"name": "a"}, "eval": {"suites": [
            {"name": "mine", "kind": "jsonl", "path": "/dev/null", "split": "test"}], "main_metric": "mine/greedy_accuracy"}})


@pytest.mark.parametrize(("kind", "levels", "held_out"), [("arithmetic", [1, 2, 3], ("seen", "unseen", "transfer")),
                                                         ("instructions", [1, 2], ("seen", "unseen", "novel"))])
def test_no_held_out_item_shares_a_canonical_form_with_a_training_prompt(kind: str, levels: list[int], held_out) -> None:
    """The arithmetic split hashed the ordered pair, so 88 of 136 test problems had their commuted twin among the
    training prompts; 158 of 200 instruction-following test items differed from a training sibling only in a
    constraint's value. Problems are now split by their canonical form, in every wording, level and suite."""
    from selfloop.families import family

    spec = family(kind)
    trained = {p.canonical for level in levels for phrasing in ("seen", "varied") if phrasing in spec.phrasings
               for p in spec.problems([level], "train", phrasing)}
    for phrasing in held_out:
        for level in levels:
            held = spec.problems([level], "eval", phrasing)
            assert not [p.key for p in held if p.canonical in trained], (phrasing, level)


def test_a_commuted_sum_and_its_word_problem_are_one_problem() -> None:
    from selfloop.families.arithmetic import canonical, split_of

    assert canonical("arith:1:add:7:12") == canonical("arith:1:add:12:7") == canonical("arith:3:word-add:Ana:apples:12:7")
    assert canonical("arith:2:sub:40:13") != canonical("arith:2:sub:13:40") and canonical(canonical("arith:1:add:7:12")) == "arith:add:7:12"
    for a in range(1, 31):
        for b in range(1, 31):
            assert split_of(f"arith:1:add:{a}:{b}") == split_of(f"arith:1:add:{b}:{a}")


def test_instructions_that_differ_only_in_a_value_are_one_problem() -> None:
    from selfloop.families.instructions import problems, universe

    keys = {p.key: p for p in universe(1)}
    short = next(p for p in universe(1) if p.key.endswith("max_words=20"))
    longer = keys[short.key.replace("max_words=20", "max_words=60")]
    other_topic = next(p for p in universe(1) if p.key.endswith("max_words=20") and p.canonical != short.canonical)
    assert short.canonical == longer.canonical != other_topic.canonical
    side = {p.key for p in problems([1], "train")}
    assert (short.key in side) == (longer.key in side)


def test_transfer_and_novel_suites_ask_forms_never_trained_and_are_graded() -> None:
    """Arithmetic transfer: held-out sums and differences of level 1's numbers as word problems, other notations and
    subtraction; instruction following novel: new tasks, new topics and five constraint kinds never trained."""
    from selfloop.config import TaskSource
    from selfloop.families import family
    from selfloop.families.instructions import KINDS, NOVEL_KINDS, NOVEL_TASKS, NOVEL_TOPICS, grade

    transfer = load_suite(SuiteConfig(name="t", kind="arithmetic", levels=[1], size=100_000, phrasing="transfer"))
    assert transfer and any(" - " in i.prompt or "lost" in i.prompt or "Take" in i.prompt for i in transfer)
    assert any("How many" in i.prompt for i in transfer)
    training = {t.prompt for t in load_pool(TaskSource(kind="arithmetic", levels=[1, 2, 3], phrasing="varied"))}
    assert not {i.prompt for i in transfer} & training
    assert family("arithmetic").check("The total is 12.", "12").correct
    novel = load_suite(SuiteConfig(name="n", kind="instructions", levels=[1, 2], size=100_000, phrasing="novel"))
    assert len(NOVEL_KINDS) >= 3 and not set(NOVEL_KINDS) & set(KINDS)
    assert all(any(t.split("{")[0] in i.prompt for t in NOVEL_TASKS) and any(tp in i.prompt for tp in NOVEL_TOPICS)
               for i in novel)
    training = load_pool(TaskSource(kind="instructions", levels=[1, 2]))
    assert not any(k in t.answer for t in training for k in NOVEL_KINDS)  # no novel kind is ever trained on
    upper = next(i for i in novel if i.answer == '{"follow": [["uppercase", null]]}')
    assert grade("ALL CAPS HERE", upper.answer).correct and not grade("Not caps", upper.answer).correct
    # the halves of a held-out-whole suite still split it in two
    halves = [load_suite(SuiteConfig(name=s, kind="instructions", levels=[1], size=100_000, phrasing="novel", split=s))
              for s in ("validation", "test")]
    assert halves[0] and halves[1] and not {i.prompt for i in halves[0]} & {i.prompt for i in halves[1]}

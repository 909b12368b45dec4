"""The built-in task families: instruction-following verifiers (tables, adversarial cases included),
fixed splits of values and of phrasings, grading, and the judge's calibration by hand."""

from __future__ import annotations

import json
import re

import pytest

from selfloop.config import SuiteConfig, TaskSource
from selfloop.evals.suites import load_suite
from selfloop.families import arithmetic, family, instructions, units
from selfloop.families.instructions import KINDS, followed, parse_answer
from selfloop.families.value import grade_value as grade
from selfloop.judging.calibration import auc, ranking_accuracy
from selfloop.tasks import load_pool

VERIFIERS = [
    # (kind, value, response, followed)
    ("lowercase", None, "all of this is lowercase, even 42 and symbols!", True),
    ("lowercase", None, "almost all lowercase except One word", False),
    ("lowercase", None, "12345 !!!", False),  # no letters at all: nothing was written in lowercase
    ("lowercase", None, "", False),
    ("lowercase", None, "ünïcödé lower", True),
    ("lowercase", None, "ÜNÏCÖDÉ", False),
    ("max_words", 5, "one two three four five", True),
    ("max_words", 5, "one two three four five six", False),
    ("max_words", 5, "don't stop-me now, please.", True),  # contractions and hyphenated words count once
    ("max_words", 5, "", False),  # an empty answer follows no length instruction
    ("max_words", 5, "* a\n* b\n* c", True),  # bullets are not words
    ("min_words", 3, "one two three", True),
    ("min_words", 3, "one two", False),
    ("min_words", 3, "one, two... , ,", False),
    ("include", "because", "I stayed in because it rained.", True),
    ("include", "because", "BECAUSE it rained", True),  # case-insensitive
    ("include", "because", "Becauses are not a word", False),  # the word, not a prefix
    ("include", "because", "It rained; 'cause of that I stayed", False),
    ("include", "simple", "a non-simple plan", True),  # a hyphen separates words
    ("avoid", "very", "It was quite nice.", True),
    ("avoid", "very", "It was Very nice.", False),
    ("avoid", "very", "Every day is nice.", True),  # inside another word is not the word
    ("avoid", "very", "", False),  # saying nothing does not follow the instruction
    ("bullets", 3, "* one\n* two\n* three", True),
    ("bullets", 3, "- one\n- two\n- three\nSome closing words.", True),
    ("bullets", 3, "* one\n* two", False),
    ("bullets", 3, "* one\n* two\n* three\n* four", False),
    ("bullets", 3, "*one\n*two\n*three", False),  # markdown needs the space
    ("bullets", 3, "**Bold** heading\n* one\n* two\n* three", True),  # bold is not a bullet
    ("json", None, '{"a": 1, "b": [2, 3]}', True),
    ("json", None, '```json\n{"a": 1}\n```', True),  # a fenced block, as IFEval allows
    ("json", None, "Here it is: {\"a\": 1}", False),
    ("json", None, "{'a': 1}", False),  # Python, not JSON
    ("json", None, "", False),
    ("end_with", "That is all.", "Some text. That is all.", True),
    ("end_with", "That is all.", "Some text. That is all.\n\n", True),  # trailing whitespace
    ("end_with", "That is all.", "That is all. Bye.", False),
    ("end_with", "That is all.", "Some text. That is all", False),  # the exact phrase, full stop included
    ("no_commas", None, "No commas here at all.", True),
    ("no_commas", None, "One, two.", False),
    ("no_commas", None, "   ", False),
    ("quotation", None, '"All of it quoted."', True),
    ("quotation", None, '  "quoted with spaces around"  \n', True),
    ("quotation", None, '"', False),  # one quote mark is not a wrapped response
    ("quotation", None, '"Quoted" and then not', False),
]


@pytest.mark.parametrize(("kind", "value", "response", "expected"), VERIFIERS,
                         ids=[f"{k}-{r[:24]!r}" for k, _, r, _ in VERIFIERS])
def test_verifier_table(kind: str, value: object, response: str, expected: bool) -> None:
    assert followed(response, [[kind, value]]) == [expected]


def test_every_kind_has_table_cases_both_ways() -> None:
    for kind in KINDS:
        outcomes = {e for k, _, _, e in VERIFIERS if k == kind}
        assert outcomes == {True, False}, kind


def test_grading_values_and_constraints() -> None:
    answer = json.dumps({"follow": [["lowercase", None], ["max_words", 4]]})
    g = instructions.grade("just four words here", answer)
    assert g.correct and g.parts == (True, True) and g.predicted == "2/2 followed"
    g = instructions.grade("Just four words here", answer)
    assert not g.correct and g.parts == (False, True) and g.predicted == "1/2 followed"
    assert grade("2 + 3 = 5.", "5").correct and grade("The answer is 5.0", "5").predicted == "5"
    assert not grade("It is 6.", "5").correct and not grade(None, "5").correct
    # The family decides the grader, not the answer's text: a constraint list under 'value' is a value.
    assert grade(answer, answer).parts is None and family("value").grade is grade
    assert family("instructions").grade is instructions.grade and family("arithmetic").grade is grade
    for odd in ['{"follow": []}', '{"follow": [["shout", null]]}', '{"follow": "lowercase"}', '{"follow": [1]}']:
        assert parse_answer(odd) is None
        with pytest.raises(ValueError, match="not an instruction-following answer"):
            instructions.grade(odd, odd)


def test_grading_is_the_familys_rule_whatever_the_loop_votes_with(tmp_path, config_factory) -> None:
    """A loop voting with stated_number grades its samples with the family's chain (last_number): the vote may
    change, the grading may not, so a lab's arms are graded alike."""
    from sqlalchemy import select

    from selfloop.db.engine import open_database
    from selfloop.db.models import Sample
    from selfloop.families.answers import extract_answer
    from selfloop.families.spec import FamilySpec
    from tests.conftest import store_samples

    mentioned = "To add 24 and 28, you simply add them together."
    chain = ["boxed", "answer_is", "hash", "stated_number"]
    assert extract_answer(mentioned, chain) is None and extract_answer(mentioned) == "28"
    assert family("arithmetic").extractors == ("boxed", "answer_is", "hash", "last_number")
    assert family("arithmetic").check(mentioned, "28").correct and not family("arithmetic").check(mentioned, "52").correct
    for extractors in (chain, ["last_number"]):
        db = open_database(f"sqlite:///{tmp_path / f'{len(extractors)}.db'}", init=True)
        config = config_factory(judge={"vote": {"extractors": extractors}})
        store_samples(db, config, [("What is 24 + 28?", "28", [mentioned, "24 + 28 = 52", "It is 28."])], "arithmetic")
        with db.session() as s:
            assert s.scalars(select(Sample.correct).order_by(Sample.sample_index)).all() == [True, False, True]
        db.dispose()
    with pytest.raises(ValueError, match="extractors must be a non-empty list of boxed, answer_is"):
        FamilySpec(name="odd", summary="x", grade=grade, extractors=("last_word",))


def test_families_declare_what_the_config_allows() -> None:
    from selfloop.config import validate_config
    from selfloop.errors import ConfigError

    base = {"loop": {"name": "x"}}
    with pytest.raises(ConfigError, match="levels: the instructions family has levels 1, 2, not 3"):
        validate_config({**base, "generation": {"tasks": {"kind": "instructions", "levels": [3]}}})
    with pytest.raises(ConfigError, match="phrasing 'varied': the instructions family has seen, unseen"):
        validate_config({**base, "generation": {"tasks": {"kind": "instructions", "phrasing": "varied"}}})
    with pytest.raises(ConfigError, match="'units' is not one of seed, jsonl, arithmetic, instructions"):
        validate_config({**base, "generation": {"tasks": {"kind": "units"}}})  # evaluation only
    with pytest.raises(ConfigError, match="'value' is not one of arithmetic, units, instructions, jsonl"):
        validate_config({**base, "eval": {"suites": [{"name": "v", "kind": "value"}], "main_metric": "v/greedy_accuracy"}})
    suite = SuiteConfig(name="mine", kind="jsonl", path="/tmp/x.jsonl", family="instructions")
    assert suite.graded_by() == "instructions" and SuiteConfig(name="a", kind="arithmetic").graded_by() == "arithmetic"
    with pytest.raises(ValueError, match="Input should be 'value', 'arithmetic', 'units' or 'instructions'"):
        SuiteConfig(name="mine", kind="jsonl", path="/tmp/x.jsonl", family="shout")


@pytest.mark.parametrize("level", [1, 2])
def test_instruction_splits_are_fixed_disjoint_and_worded_apart(level: int) -> None:
    train = instructions.problems([level], "train")
    held = instructions.problems([level], "eval")
    assert len(held) >= 200 and len(train) > len(held)
    assert not {p.key for p in train} & {p.key for p in held}
    assert not {p.prompt for p in train} & {p.prompt for p in held}
    for p in train + held:
        constraints = parse_answer(p.answer)
        assert constraints and len(constraints) == level
        if level == 2:  # never two of one kind, never a pair that cannot be followed together
            kinds = frozenset(k for k, _ in constraints)
            assert len(kinds) == 2 and kinds not in instructions.CONFLICTS
    # The held-out wording of every kind appears in no training prompt, of either level.
    training_text = "\n".join(p.prompt for lv in (1, 2) for p in instructions.problems([lv], "train"))
    for kind in KINDS.values():
        fixed = kind.phrasings[-1].split("{value}")[0]
        assert fixed and fixed not in training_text, kind.name
        for seen in kind.phrasings[:-1]:
            assert seen.split("{value}")[0] in training_text, (kind.name, seen)  # the seen ones are used


def test_unseen_phrasings_ask_the_same_problems_in_other_words() -> None:
    for kind, extra in (("arithmetic", {"levels": [1, 2, 3]}), ("units", {}), ("instructions", {"levels": [1]})):
        seen = load_suite(SuiteConfig(name="s", kind=kind, size=200, seed=7, **extra))
        unseen = load_suite(SuiteConfig(name="u", kind=kind, size=200, seed=7, phrasing="unseen", **extra))
        assert [i.answer for i in seen] == [i.answer for i in unseen]
        assert all(a.prompt != b.prompt for a, b in zip(seen, unseen)), kind
    train_prompts = {p.prompt for lv in (1, 2, 3) for p in arithmetic.problems([lv], "train")}
    unseen_all = {p.prompt for lv in (1, 2, 3) for split in ("train", "eval") for p in arithmetic.problems([lv], split, "unseen")}
    assert not train_prompts & unseen_all
    assert units.universe()[0].prompt != units.universe("unseen")[0].prompt


def test_varied_training_wordings_use_every_variant_and_no_held_out_one() -> None:
    seen = load_pool(TaskSource(kind="arithmetic", levels=[1, 2, 3]))
    varied = load_pool(TaskSource(kind="arithmetic", levels=[1, 2, 3], phrasing="varied"))
    assert [(t.key, t.answer) for t in seen] == [(t.key, t.answer) for t in varied]  # same problems
    text = "\n".join(t.prompt for t in varied)
    for op, variants in arithmetic.VARIED.items():
        for wording in (arithmetic.WORDINGS[op][0], *variants):  # each training wording is drawn
            pattern = "^" + re.escape(wording).replace(r"\{a\}", r"\d+").replace(r"\{b\}", r"\d+") + "$"
            assert re.search(pattern, text, re.M), wording
    held_out = {p.prompt for lv in (1, 2, 3) for p in arithmetic.problems([lv], "train", "unseen")}
    assert not {t.prompt for t in varied} & held_out
    assert sum(a.prompt != b.prompt for a, b in zip(seen, varied)) > len(seen) // 2
    with pytest.raises(ValueError, match="varied"):
        TaskSource(kind="instructions", phrasing="varied")


def test_instruction_pool_and_suite_from_config() -> None:
    pool = load_pool(TaskSource(kind="instructions", levels=[1, 2]))
    assert pool and all(parse_answer(t.answer) for t in pool)
    with pytest.raises(ValueError, match="levels 1"):
        TaskSource(kind="instructions", levels=[3])
    with pytest.raises(ValueError, match="JSONL"):
        SuiteConfig(name="mine", kind="jsonl", path="x.jsonl", phrasing="unseen")


def test_ranking_accuracy_and_auc_by_hand() -> None:
    """Correct samples scored 4, 3, 3; wrong ones 3, 1. Pairs: (4,3) 1, (4,1) 1, (3,3) 0.5, (3,1) 1,
    (3,3) 0.5, (3,1) 1 -> 5/6."""
    right, wrong = [4.0, 3.0, 3.0], [3.0, 1.0]
    assert ranking_accuracy([(c, w) for c in right for w in wrong]) == pytest.approx(5 / 6)
    assert auc(right, wrong) == pytest.approx(5 / 6)
    assert auc([1.0], [2.0]) == 0.0 and auc([2.0], [2.0]) == 0.5 and auc([], [1.0]) is None

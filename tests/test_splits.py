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

"""bench/judge.py on the tiny model (a smoke test: the benchmark runs its three ways and reports them)."""

from __future__ import annotations

import pytest

from tests.support.bench import run_bench


@pytest.mark.integration
def test_the_judge_benchmark_times_three_ways_and_finds_the_same_justifications(tiny_model) -> None:
    line = run_bench("judge.py", "--model", "tiny", "--prompts", "2", "--rounds", "1")
    assert line["samples"] == 8 and set(line["seconds"]) == {"before", "chunked", "now"}
    assert line["same_justifications"] is True
    assert line["score_max_abs_diff"]["now"] < 1e-3 and line["settings"]["prefill_tokens"] == 8192

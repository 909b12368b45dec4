"""bench/compile_decode.py on the tiny model (a smoke test: eager and compiled decodes timed and compared)."""

from __future__ import annotations

import pytest

from tests.support.bench import run_bench


@pytest.mark.integration
def test_the_compile_benchmark_times_both_sides_and_compares_their_answers(tiny_model) -> None:
    line = run_bench("compile_decode.py", "--model", "tiny", "--items", "2", "--max-new-tokens", "3", timeout=900)
    assert line["items"] == 2 and 0 <= line["same_text_as_eager"] <= 2 and len(line["eager_runs"]) == 2
    assert line["eager_seconds"] > 0 and line["compiled_seconds"] > 0
    assert line["ratio"] > 0 and line["compilation_seconds"] > 0  # the first compiled run compiles
    assert line["settings"]["compile"]["dynamic"] is True

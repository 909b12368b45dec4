"""bench/eval_decode.py on the tiny model (a smoke test: the decode is profiled and its time split by operator)."""

from __future__ import annotations

import pytest

from tests.support.bench import run_bench


@pytest.mark.integration
def test_the_decode_benchmark_splits_the_time_by_operator(tiny_model) -> None:
    line = run_bench("eval_decode.py", "--model", "tiny", "--items", "4", "--max-new-tokens", "6")
    assert line["items"] == 4 and 0 < line["generated_tokens"] <= 24 and line["same_answers_profiled"] is True
    assert abs(sum(line["share"].values()) - 1) < 1e-3 and "aten::mm" in line["share"]
    assert line["matmul"]["gflop_per_s"] > 0 and line["matmul"]["ceiling_gflop_per_s"] > 0

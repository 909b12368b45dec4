"""bench/judge.py on the tiny model (a smoke test: the benchmark runs its three ways and reports them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CACHE

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.integration
def test_the_judge_benchmark_times_three_ways_and_finds_the_same_justifications(tiny_model) -> None:
    env = {**os.environ, "SELFLOOP_CACHE_DIR": str(CACHE), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "bench/judge.py", "--model", "tiny", "--prompts", "2", "--rounds", "1"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=True)
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["samples"] == 8 and set(line["seconds"]) == {"before", "chunked", "now"}
    assert line["same_justifications"] is True
    assert line["score_max_abs_diff"]["now"] < 1e-3 and line["settings"]["prefill_tokens"] == 8192

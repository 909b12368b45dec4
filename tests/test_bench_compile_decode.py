"""bench/compile_decode.py on the tiny model (a smoke test: eager and compiled decodes timed and compared)."""

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
def test_the_compile_benchmark_times_both_sides_and_compares_their_answers(tiny_model) -> None:
    env = {**os.environ, "SELFLOOP_CACHE_DIR": str(CACHE), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "bench/compile_decode.py", "--model", "tiny", "--items", "2", "--max-new-tokens", "3"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=True)
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["items"] == 2 and 0 <= line["same_text_as_eager"] <= 2 and len(line["eager_runs"]) == 2
    assert line["eager_seconds"] > 0 and line["compiled_seconds"] > 0
    assert line["ratio"] > 0 and line["compilation_seconds"] > 0  # the first compiled run compiles
    assert line["settings"]["compile"]["dynamic"] is True

"""bench/demo.py on the tiny model, this tree against itself (a smoke test: both sides run, their histories are read
from the stores and compared, and a history that differs is reported as such)."""

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
def test_the_demo_benchmark_times_both_sides_and_compares_their_histories(tiny_model, tmp_path: Path) -> None:
    old = tmp_path / "old"
    env = {**os.environ, "SELFLOOP_CACHE_DIR": str(CACHE), "PYTHONPATH": str(ROOT)}
    try:
        out = subprocess.run([sys.executable, "bench/demo.py", "--old", "HEAD", "--old-tree", str(old), "--model", "tiny",
                              "--max-iterations", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True)
    assert out.returncode == 0, out.stderr[-2000:]
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(line["seconds"]) == {"old", "new"} and line["ratio"] > 0
    # The same code on the same config: the same samples, answers and decisions, and every table has rows to compare.
    assert line["history_equal"] == {"eval_items": True, "samples": True, "promotions": True}
    assert line["rows"]["samples"] > 0 and line["rows"]["eval_items"] > 0 and line["rows"]["promotions"] == 1
    assert {"rollout", "train", "evaluate"} <= set(line["runs"]["new"][0]["phase_seconds"])
    assert line["today"]["seconds"] > 0 and line["settings"]["overrides"] == {"model.base": "tiny", "loop.max_iterations": 1}

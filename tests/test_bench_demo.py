"""bench/demo.py on the tiny model, this tree against itself (a smoke test: both sides run, their histories are read
from the stores and compared, and a history that differs is reported as such)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.bench import ROOT, run_bench


@pytest.mark.integration
def test_the_demo_benchmark_times_both_sides_and_compares_their_histories(tiny_model, tmp_path: Path) -> None:
    old = tmp_path / "old"
    try:
        line = run_bench("demo.py", "--old", "HEAD", "--old-tree", str(old), "--model", "tiny", "--max-iterations", "1",
                         timeout=900)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True)
    assert set(line["seconds"]) == {"old", "new"} and line["ratio"] > 0
    # The same code on the same config: the same samples, answers and decisions, and every table has rows to compare.
    assert line["history_equal"] == {"eval_items": True, "samples": True, "promotions": True}
    assert line["rows"]["samples"] > 0 and line["rows"]["eval_items"] > 0 and line["rows"]["promotions"] == 1
    assert {"rollout", "train", "evaluate"} <= set(line["runs"]["new"][0]["phase_seconds"])
    assert line["today"]["seconds"] > 0 and line["settings"]["overrides"] == {"model.base": "tiny", "loop.max_iterations": 1}

"""bench/gpu_check.py: the GPU paths' check. CI has no GPU, so it runs the same checks on CPU (float32,
tiny model) to keep the script working; on a CUDA machine the `gpu` test runs it for real."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO


def _check(*args: str) -> tuple[int, dict]:
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--model", "tiny", *args],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.integration
def test_every_check_passes_on_cpu() -> None:
    code, result = _check("--allow-cpu")
    assert code == 0, result
    assert result["device"] == "cpu" and result["dtype"] == "float32"
    assert result["checks"] == {"generate": "pass", "train": "pass", "loop_iteration": "pass"}
    assert result["generate_tokens_per_s"] > 0 and result["train_step_s"] > 0


@pytest.mark.integration
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_without_a_gpu_it_says_so_and_fails() -> None:
    code, result = _check()
    assert code == 1 and result["checks"]["cuda"].startswith("fail: no CUDA GPU")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_every_check_passes_on_the_gpu() -> None:
    code, result = _check()
    assert code == 0, result
    assert result["dtype"] in ("bfloat16", "float16") and result["checks"]["sleep_wake"] == "pass"

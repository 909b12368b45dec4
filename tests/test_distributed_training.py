"""Data-parallel training for real: two CPU processes over gloo (torch.distributed.run + accelerate DDP)
against one process with the same global batch.

Tolerance: the two runs pad each forward pass to its own longest row (a shard of the batch against the
whole batch), which changes float32 summation order; measured: step losses within 6e-8, gradient norms
within 4e-8, adapter weights within 8e-7 (Adam's normalised steps carry the noise into the weights).
1e-5 leaves room and still catches a wrong shard weight (a factor of 2 in the loss).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy import select

from selfloop.db.models import Checkpoint, Iteration, TrainStep
from selfloop.loop import open_loop, run_iteration
from selfloop.runner import prepare, start_runtime, take_loop
from tests.conftest import make_config

pytestmark = [pytest.mark.integration]
TOL = 1e-5


def _run(tmp_path: Path, processes: int, **train) -> tuple[list[float], list[float], dict[str, torch.Tensor]]:
    """One iteration of a tiny loop; its training steps' (loss, grad norm) and its adapter's tensors."""
    config = make_config(tmp_path, f"sqlite:///{tmp_path / 'dp.db'}",
                         loop={"name": "dp", "state_dir": str(tmp_path / "state"), "seed": 7, "max_iterations": 1},
                         train={"batch_size": 4, "processes": processes, "max_length": 128, "learning_rate": 1e-3,
                                "lora": {"rank": 4, "alpha": 8}, **train})
    db = prepare(config)
    lock = take_loop(db, config, "run")
    runtime = start_runtime(config)
    try:
        open_loop(db, config)
        assert run_iteration(db, config, runtime).status == "done"
        with db.session() as session:
            steps = session.execute(select(TrainStep.loss, TrainStep.grad_norm).order_by(TrainStep.step)).all()
            path = session.scalar(select(Checkpoint.path).join(Iteration, Iteration.output_checkpoint_id == Checkpoint.id))
    finally:
        runtime.close()
        lock.release()
        db.dispose()
    weights = load_file(str(config.checkpoint_dir(path) / "adapter_model.safetensors"))
    return [s.loss for s in steps], [s.grad_norm for s in steps], weights


@pytest.mark.parametrize("algorithm", ["ttrl", "rlsc"])
def test_two_processes_take_the_steps_of_one(tmp_path: Path, algorithm: str) -> None:
    train = {"algorithm": algorithm, "grad_accum": 2, "epochs": 2} if algorithm == "ttrl" else {"algorithm": algorithm}
    loss1, norm1, w1 = _run(tmp_path / "one", 1, **train)
    loss2, norm2, w2 = _run(tmp_path / "two", 2, **train)
    print("losses", loss1, loss2, "norms", norm1, norm2)
    assert len(loss1) == len(loss2) >= 2
    assert max(abs(a - b) for a, b in zip(loss1, loss2)) < TOL, (loss1, loss2)
    assert max(abs(a - b) for a, b in zip(norm1, norm2)) < TOL, (norm1, norm2)
    assert w1.keys() == w2.keys()
    diff = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    print("max adapter weight diff", diff)
    assert diff < TOL
    # The adapter moved: equality is not two untouched initialisations.
    assert max(w1[k].abs().max().item() for k in w1 if "lora_B" in k) > 0


def test_a_failing_worker_fails_the_phase_in_one_line(tmp_path: Path) -> None:
    from selfloop.training.distributed import TrainingProcessesFailed, run_workers

    job = {"model_dir": str(tmp_path / "no-such-model"), "device": "cpu", "dtype": "float32",
           "train": {"algorithm": "rlsc", "batch_size": 2, "processes": 2}, "needs_reference": True,
           "init": None, "seed_init": 1, "seed_order": 2, "out": str(tmp_path / "out"), "base_model": "x", "extra": {}}
    with pytest.raises(TrainingProcessesFailed, match=r"training on 2 processes failed \(exit [1-9]") as failed:
        run_workers(workdir=tmp_path, processes=2, device="cpu", job=job, items=[], on_reference=lambda _: None,
                    on_step=lambda _: None, stop_requested=lambda: False)
    assert "\n" not in str(failed.value) and "no-such-model" in str(failed.value)
    assert not (tmp_path / "out").exists()

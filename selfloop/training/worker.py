"""One data-parallel training process (`python -m selfloop.training.worker JOB.json`), launched by
`selfloop.training.distributed` under torch.distributed.run or accelerate launch.

Every process loads the base model and the starting adapter, computes reference log-probs for its shard
of the items (gathered on all), and runs the shared training loop with its shard of every batch (DDP
through accelerate). Rank 0 alone appends events for the loop's process and writes the checkpoint.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any


def main(job_path: str) -> int:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    from selfloop.adapters import Adapter
    from selfloop.algorithms import spec, trainer
    from selfloop.algorithms.items import TrainItem, reference_rows, set_reference
    from selfloop.config import TrainConfig
    from selfloop.models.loading import pick_dtype
    from selfloop.processes import alive
    from selfloop.training.checkpoint import save_adapter
    from selfloop.training.loop import load_trainable, reference_logps, train

    job = json.loads(Path(job_path).read_text())
    accelerator = Accelerator(cpu=job["device"] == "cpu")
    main_process = accelerator.is_main_process
    cfg = TrainConfig.model_validate(job["train"])
    module = trainer(cfg.algorithm)
    algo_cfg = cfg.options()
    items = [TrainItem(**it) for it in job["items"]]
    own = spec(cfg.algorithm).data  # the algorithm's data travels as JSON, read back through its model
    for it in items:
        it.data = own.model_validate(it.data) if own is not None and it.data is not None else None
    init = Adapter(job["init"]["checkpoint_id"], Path(job["init"]["path"]), job["init"]["sha256"]) if job["init"] else None
    events = open(job["events"], "a") if main_process else None  # noqa: SIM115 - held open for the whole run, closed at its end

    def emit(kind: str, **fields: Any) -> None:
        if events is not None:
            events.write(json.dumps({"kind": kind, **fields}) + "\n")
            events.flush()

    def check_parent() -> bool:
        return not alive(job["parent_pid"])  # the loop's process is gone: stop, nobody records this

    torch.manual_seed(job["seed_init"])  # the same fresh adapter on every process (DDP also broadcasts rank 0's)
    model = load_trainable(Path(job["model_dir"]), init, cfg.lora, accelerator.device,
                           pick_dtype(job["dtype"], accelerator.device), cfg.gradient_checkpointing)
    if job["needs_reference"]:
        mine = items[accelerator.process_index :: accelerator.num_processes]
        reference_logps(model, mine, cfg.batch_size)
        rows = gather_object(reference_rows(mine))
        set_reference(items, rows)
        emit("reference", items=rows)
    model = accelerator.prepare_model(model)

    train(model, items, module, algo_cfg, cfg, seed=job["seed_order"],
          on_step=lambda record: emit("step", record=asdict(record)),
          stop_requested=check_parent, accelerator=accelerator)
    accelerator.wait_for_everyone()
    if main_process and alive(job["parent_pid"]):
        saved = save_adapter(accelerator.unwrap_model(model), Path(job["out"]), base_model=job["base_model"], extra=job["extra"])
        emit("saved", path=str(saved.path), sha256=saved.sha256, size_bytes=saved.size_bytes,
             processes=accelerator.num_processes, distributed_type=str(accelerator.distributed_type))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

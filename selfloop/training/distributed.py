"""Training on several processes: the loop's process launches N data-parallel workers and records what they do.

The loop process (which holds the loop's writer lock and the database) writes a job file (JSON: the
items as token ids, the configs, seeds, where to save), launches `selfloop.training.worker` on N
processes, and follows the events the main worker (rank 0) appends to a JSON-lines file: reference
log-probs, then one record per step, then the saved checkpoint. It writes the rows itself, so the
workers never touch the database; only rank 0 writes the checkpoint directory.

Launchers: on GPUs `accelerate launch --multi_gpu` (it honours the user's `accelerate config` default
file, e.g. for the GPUs to use); on CPU `torch.distributed.run` (accelerate's launcher runs one
process for CPU, multi-CPU needs MPI), with gloo. Workers stop when the loop's process is gone, so a
killed loop leaves no training behind it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from selfloop.algorithms.items import TrainItem, set_reference
from selfloop.errors import Interrupted, SelfloopError
from selfloop.manifest import TMP_PREFIX
from selfloop.private import private_dir

POLL_S = 0.2


class TrainingProcessesFailed(SelfloopError):
    """A training worker process exited with an error."""


def launcher_command(processes: int, device: str, job: Path) -> list[str]:
    worker = ["-m", "selfloop.training.worker", str(job)]
    if device == "cpu":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", *worker]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", f"--num_processes={processes}", *worker]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """The launcher gets SIGTERM when the loop's process dies (it passes it on to its workers)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run_workers(
    *,
    workdir: Path,
    processes: int,
    device: str,
    job: dict,
    items: list[TrainItem],
    on_reference: Callable[[list[TrainItem]], None],
    on_step: Callable[[dict], None],
    stop_requested: Callable[[], bool],
) -> dict:
    """Run the job on `processes` workers; returns the main worker's 'saved' event (path, sha256, size_bytes,
    processes, distributed_type).
    The workdir (under the loop's checkpoints, named as a temporary) is removed afterwards."""
    run_dir = private_dir(workdir / f"{TMP_PREFIX}train-{uuid.uuid4().hex[:8]}")
    events_path, log_path = run_dir / "events.jsonl", run_dir / "workers.log"
    job_path = run_dir / "job.json"
    job = {**job, "items": [{**asdict(it), "data": it.data.model_dump(mode="json") if it.data is not None else None}
                            for it in items], "events": str(events_path), "parent_pid": os.getpid()}
    job_path.write_text(json.dumps(job))
    events_path.touch()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))}
    saved: dict | None = None
    with open(log_path, "wb") as log, open(events_path) as events:
        proc = subprocess.Popen(launcher_command(processes, device, job_path), stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True, preexec_fn=_die_with_parent)
        try:
            while True:
                line = events.readline()
                if line.endswith("\n"):
                    event = json.loads(line)
                    if event["kind"] == "reference":
                        set_reference(items, event["items"])
                        on_reference(items)
                    elif event["kind"] == "step":
                        on_step(event["record"])
                    elif event["kind"] == "saved":
                        saved = event
                    continue
                if proc.poll() is not None and not line:
                    break
                if stop_requested():
                    raise Interrupted("stop requested during training")
                time.sleep(POLL_S)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    if proc.returncode != 0 or saved is None:
        tail = _last_error(log_path)
        raise TrainingProcessesFailed(f"training on {processes} processes failed (exit {proc.returncode}): {tail} "
                                      f"(log: {log_path})")
    if saved["processes"] != processes:
        raise TrainingProcessesFailed(f"asked for {processes} training processes, the launcher ran {saved['processes']}")
    shutil.rmtree(run_dir, ignore_errors=True)
    return saved


_EXCEPTION = re.compile(r"^(?:\[rank\d+\]:\s*)?((?:[\w.]+\.)?\w*(?:Error|Exception|Interrupted|Failed)\b:.*)$")


def _last_error(log: Path) -> str:
    """The workers' own exception line (the first worker's), else the launcher's last line."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    found = [m.group(1) for ln in lines if (m := _EXCEPTION.match(ln)) and "ChildFailedError" not in ln]
    return " ".join((found[-1] if found else (lines or ["no output"])[-1]).split())[:400]

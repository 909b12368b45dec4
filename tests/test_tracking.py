"""MLflow (a real local tracking store) and W&B (offline run files on disk) hold what the database holds:
every training step's loss and each iteration's figures; `selfloop track` backfills a finished loop;
an unreachable tracker neither stops nor fails the loop."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from selfloop.db.engine import open_database
from selfloop.db.models import Eval, Event, Iteration, Loop, Metric, TrackerRun, TrainStep
from tests.conftest import selfloop_cli, selfloop_process, tiny_yaml
from tests.wandb_records import history

pytestmark = pytest.mark.integration


def _store(url: str, loop: str) -> tuple[list[float], dict[int, dict[str, float]]]:
    """The loop's training losses in order and, per iteration, its metrics and candidate evals."""
    db = open_database(url)
    with db.session() as s:
        loop_id = s.scalar(select(Loop.id).where(Loop.name == loop))
        its = dict(s.execute(select(Iteration.id, Iteration.number).where(Iteration.loop_id == loop_id)).all())
        losses = [loss for loss, in s.execute(select(TrainStep.loss).join(Iteration, Iteration.id == TrainStep.iteration_id)
                                                 .where(Iteration.loop_id == loop_id).order_by(Iteration.number, TrainStep.step))]
        figures: dict[int, dict[str, float]] = {n: {} for n in its.values()}
        for it, name, value in s.execute(select(Metric.iteration_id, Metric.name, Metric.value).where(Metric.iteration_id.in_(its))):
            figures[its[it]][name] = value
        for it, suite, metric, value in s.execute(select(Eval.iteration_id, Eval.suite, Eval.metric, Eval.value)
                                                  .where(Eval.iteration_id.in_(its), Eval.role == "candidate")):
            figures[its[it]][f"eval.candidate.{suite}.{metric}"] = value
    db.dispose()
    return losses, figures


def _mlflow(uri: str, loop: str) -> tuple[list[float], dict[int, dict[str, float]], dict[str, str]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("selfloop")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`selfloop.loop` = '{loop}'")
    assert len(runs) == 1, "one run per loop"
    run = runs[0]
    losses = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)]
    figures: dict[int, dict[str, float]] = {}
    for key in run.data.metrics:
        if key.startswith("iteration/"):
            for m in client.get_metric_history(run.info.run_id, key):
                figures.setdefault(m.step, {})[key.removeprefix("iteration/")] = m.value
    return losses, figures, run.data.tags | {"_status": run.info.status, **{f"param:{k}": v for k, v in run.data.params.items()}}


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def _step_metrics(url: str) -> dict[str, list[float]]:
    """Each key an algorithm stored in train_steps.metrics, its values in step order."""
    db = open_database(url)
    with db.session() as s:
        rows = s.execute(select(TrainStep.metrics).join(Iteration, Iteration.id == TrainStep.iteration_id)
                         .order_by(Iteration.number, TrainStep.step)).scalars().all()
    db.dispose()
    out: dict[str, list[float]] = {}
    for metrics in rows:
        for key, value in (metrics or {}).items():
            out.setdefault(key, []).append(value)
    return out


def _first_samples(url: str) -> dict[int, list[str]]:
    """Per iteration, the texts of its first 64 samples, as the completions table orders them."""
    from selfloop.db.models import Prompt, Sample

    db = open_database(url)
    with db.session() as s:
        its = dict(s.execute(select(Iteration.id, Iteration.number)).all())
        out = {number: list(s.scalars(select(Sample.text).join(Prompt, Prompt.id == Sample.prompt_id).where(
            Sample.iteration_id == iid).order_by(Prompt.source, Prompt.item_index, Sample.sample_index).limit(64)))
            for iid, number in its.items()}
    db.dispose()
    return out


def _mlflow_artifact(uri: str, loop: str, path: str) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("selfloop")
    [run] = client.search_runs([experiment.experiment_id], filter_string=f"tags.`selfloop.loop` = '{loop}'")
    return json.loads(Path(client.download_artifacts(run.info.run_id, path)).read_text())


def _mlflow_history(uri: str, loop: str) -> dict[str, list[float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("selfloop")
    [run] = client.search_runs([experiment.experiment_id], filter_string=f"tags.`selfloop.loop` = '{loop}'")
    return {key: [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
            for key in run.data.metrics}


def _live_losses(path: Path, loop: str) -> list[float]:
    """train/loss as MLflow's SQLite file holds it now, read through a read-only connection. MlflowClient would run
    MLflow's schema migrations on a file the loop's own client may be creating at that moment (two migrations at
    once left a half-made table, `_alembic_tmp_tags`, and the loop's tracking failing on every retry)."""
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT m.value FROM metrics m JOIN tags t ON t.run_uuid = m.run_uuid "
                            "WHERE m.key = 'train/loss' AND t.key = 'selfloop.loop' AND t.value = ? ORDER BY m.step", (loop,))
        return [r[0] for r in rows]


def _wandb_figures(rows: list[dict]) -> dict[int, dict[str, float]]:
    """Per iteration, the figures of the W&B rows that name it; an iteration in two rows fails."""
    out: dict[int, dict[str, float]] = {}
    for row in rows:
        if "iteration" in row:
            assert row["iteration"] not in out, f"iteration {row['iteration']} in two rows"
            out[row["iteration"]] = {k.removeprefix("iteration/"): v for k, v in row.items() if k.startswith("iteration/")}
    return out


def _matches(tracked: dict[int, dict[str, float]], stored: dict[int, dict[str, float]]) -> None:
    assert set(tracked) == set(stored)
    for number, values in stored.items():
        assert values, number
        for name, value in values.items():
            assert _close(tracked[number][name], value), (number, name)


def test_mlflow_and_wandb_hold_what_the_database_holds(tmp_path: Path, sqlite_url: str) -> None:
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = tiny_yaml(tmp_path, sqlite_url, tracking={"mlflow": {"enabled": True, "tracking_uri": mlflow_uri},
                                                       "wandb": {"enabled": True, "mode": "offline", "dir": str(tmp_path / "wb")}})
    out = selfloop_cli("run", "--config", str(config), env={"WANDB_SILENT": "true"})
    assert out.returncode == 0, out.stderr[-3000:]
    losses, figures = _store(sqlite_url, "tiny")
    assert len(figures) == 2 and len(losses) >= 2
    tracked_losses, tracked, tags = _mlflow(mlflow_uri, "tiny")
    assert len(tracked_losses) == len(losses) and all(_close(a, b) for a, b in zip(tracked_losses, losses, strict=True))
    _matches(tracked, figures)
    assert tags["_status"] == "FINISHED" and tags["param:train.algorithm"] == "rlsc"
    assert any(k.startswith("event.") and "iteration.done" in v for k, v in tags.items())

    files = list((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    rows = history(files[0])
    wb_losses = [row["train/loss"] for row in sorted((r for r in rows if "train/loss" in r), key=lambda r: r["_step"])]
    assert len(wb_losses) == len(losses) and all(_close(a, b) for a, b in zip(wb_losses, losses, strict=True))
    _matches(_wandb_figures(rows), figures)
    steps = [row["_step"] for row in rows]
    assert steps == sorted(steps), "W&B steps only grow"
    # Each iteration's completions with their judgments: an MLflow JSON artifact, a W&B table.
    samples = _first_samples(sqlite_url)
    for number, texts in samples.items():
        table = _mlflow_artifact(mlflow_uri, "tiny", f"completions/iteration-{number:04d}.json")
        assert [row[1] for row in table["data"]] == texts and table["columns"][:2] == ["prompt", "completion"]
        [wb_table] = (tmp_path / "wb" / "wandb").glob(f"offline-run-*/files/media/table/completions/iteration-{number:04d}_*.table.json")
        assert [row[1] for row in json.loads(wb_table.read_text())["data"]] == texts
    # Every number an algorithm stores with a step reaches both trackers (RLSC: mean_logp and mean_old_logp).
    stored = _step_metrics(sqlite_url)
    assert stored and len(next(iter(stored.values()))) == len(losses)
    client_values = _mlflow_history(mlflow_uri, "tiny")
    for key, values in stored.items():
        assert [round(v, 4) for v in client_values[f"train/{key}"]] == [round(v, 4) for v in values], key
        wb = [row[f"train/{key}"] for row in sorted((r for r in rows if f"train/{key}" in r), key=lambda r: r["_step"])]
        assert [round(v, 4) for v in wb] == [round(v, 4) for v in values], key


def test_track_backfills_a_finished_loop_and_its_fork(tmp_path: Path, sqlite_url: str) -> None:
    config = tiny_yaml(tmp_path, sqlite_url)
    assert selfloop_cli("run", "--config", str(config)).returncode == 0
    assert selfloop_cli("fork", "tiny", "--at", "1", "--name", "tiny-fork", "--db", sqlite_url,
                        "--set", "loop.max_iterations=1").returncode == 0
    assert selfloop_cli("resume", "tiny-fork", "--db", sqlite_url).returncode == 0
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking = tiny_yaml(tmp_path, sqlite_url, name="tracking.yaml", tracking={"mlflow": {"tracking_uri": mlflow_uri}})
    for loop in ("tiny", "tiny-fork"):
        out = selfloop_cli("track", loop, "--to", "mlflow", "--config", str(tracking))
        assert out.returncode == 0 and "item(s) to mlflow" in out.stdout, out.stderr[-2000:]
        losses, figures = _store(sqlite_url, loop)
        tracked_losses, tracked, tags = _mlflow(mlflow_uri, loop)
        assert all(_close(a, b) for a, b in zip(tracked_losses, losses, strict=True))
        _matches(tracked, figures)
    parent_run = _mlflow(mlflow_uri, "tiny")[2]
    fork_tags = _mlflow(mlflow_uri, "tiny-fork")[2]
    db = open_database(sqlite_url)
    with db.session() as s:
        tiny_run = s.scalar(select(TrackerRun.run_id).join(Loop, Loop.id == TrackerRun.loop_id).where(Loop.name == "tiny"))
    db.dispose()
    assert fork_tags["selfloop.parent_run_id"] == tiny_run and fork_tags["selfloop.fork_iteration"] == "1"
    assert parent_run["_status"] == "FINISHED"
    # A second backfill sends nothing new.
    out = selfloop_cli("track", "tiny", "--to", "mlflow", "--config", str(tracking))
    assert out.returncode == 0 and "sent 0 item(s)" in out.stdout
    # A backfill sends both iterations in one go: W&B still gets each iteration's figures in a row of its own
    # (sent after all the steps, they would share the last step's row and the first iteration's would be lost).
    wb = tiny_yaml(tmp_path, sqlite_url, name="wb.yaml", tracking={"wandb": {"mode": "offline", "dir": str(tmp_path / "wb")}})
    out = selfloop_cli("track", "tiny", "--to", "wandb", "--config", str(wb), env={"WANDB_SILENT": "true"})
    assert out.returncode == 0, out.stderr[-2000:]
    [run_file] = (tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb")
    rows = history(run_file)
    losses, figures = _store(sqlite_url, "tiny")
    assert [row["train/loss"] for row in rows if "train/loss" in row] == pytest.approx(losses)
    _matches(_wandb_figures(rows), figures)


def test_wandb_keeps_every_iteration_row_when_steps_would_not_grow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An iteration without training steps, and a run resumed by a new process: each iteration's figures
    keep a row of their own and no step is logged below the last (W&B would merge or drop it)."""
    from selfloop.config import Config
    from selfloop.tracking import WandbBackend

    monkeypatch.setenv("WANDB_SILENT", "true")
    config = Config.model_validate({"loop": {"name": "rows"}, "tracking": {"wandb": {"mode": "offline", "dir": str(tmp_path)}}})
    first = WandbBackend(config)
    run_id = first.open(None, "rows", {}, {})
    first.log_steps([(0, {"loss": 1.0}), (1, {"loss": 0.9})])
    first.log_iteration(1, 1, {"score": 0.1})
    first.log_iteration(2, 1, {"score": 0.2})  # no training steps: the same global step
    first.log_steps([(2, {"loss": 0.8})])  # would fall on iteration 2's row: shifted past it
    first.close(True)
    second = WandbBackend(config)
    second.open(run_id, "rows", {}, {})
    second.log_iteration(3, 2, {"score": 0.3})  # global step 2 again, in a new process
    second.log_steps([(3, {"loss": 0.7})])
    second.close(True)
    # `finish` ends by telling wandb-core the run is done without waiting for it to close the run file. Its end
    # is waited for here, as a process's exit does (CI once read the resumed run without its last rows).
    import wandb

    wandb.teardown()
    # Offline, each process writes a run file of its own (`wandb sync` joins them); online, a resumed run's
    # next step comes from W&B and `open` starts above it.
    files = sorted(tmp_path.glob("wandb/offline-run-*/run-*.wandb"), key=lambda p: p.stat().st_mtime)
    rows = [row for path in files for row in history(path)]
    assert _wandb_figures(rows) == {1: {"score": 0.1}, 2: {"score": 0.2}, 3: {"score": 0.3}}
    assert [row["train/loss"] for row in rows if "train/loss" in row] == [1.0, 0.9, 0.8, 0.7]
    for path in files:
        steps = [row["_step"] for row in history(path)]
        assert steps == sorted(steps) and len(set(steps)) == len(steps), steps


def test_an_unreachable_tracker_never_stops_the_loop(tmp_path: Path, sqlite_url: str) -> None:
    """MLflow pointed at a closed port: the loop finishes, a warning event says so, and a later
    `selfloop track` to a working store catches up on everything."""
    config = tiny_yaml(tmp_path, sqlite_url, tracking={"mlflow": {"enabled": True, "tracking_uri": "http://127.0.0.1:9"}})
    started = time.monotonic()
    # MLflow's own retry settings are left at its defaults (7 retries, 120 s): selfloop bounds them itself
    # (tracking.mlflow.timeout_s), so the warning is recorded while the loop runs.
    assert not any(k.startswith("MLFLOW_HTTP") for k in os.environ)
    out = selfloop_cli("run", "--config", str(config))
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr[-3000:]
    db = open_database(sqlite_url)
    with db.session() as s:
        warnings = s.scalars(select(Event.message).where(Event.kind == "tracking.failed")).all()
        done = s.scalar(select(Loop.status).where(Loop.name == "tiny"))
    db.dispose()
    assert done == "finished" and len(warnings) == 1 and warnings[0].startswith("mlflow:")
    assert took < 300
    # `selfloop track` to the same address fails in one line, in about twice tracking.mlflow.timeout_s.
    started = time.monotonic()
    out = selfloop_cli("track", "tiny", "--to", "mlflow", "--config", str(config))
    assert out.returncode == 1 and time.monotonic() - started < 60, out.stderr[-2000:]
    assert out.stderr.startswith("selfloop: error: mlflow at http://127.0.0.1:9 failed") and len(out.stderr.strip().splitlines()) == 1
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    working = tiny_yaml(tmp_path, sqlite_url, name="working.yaml", tracking={"mlflow": {"tracking_uri": mlflow_uri}})
    assert selfloop_cli("track", "tiny", "--to", "mlflow", "--config", str(working)).returncode == 0
    losses, figures = _store(sqlite_url, "tiny")
    tracked_losses, tracked, _ = _mlflow(mlflow_uri, "tiny")
    assert all(_close(a, b) for a, b in zip(tracked_losses, losses, strict=True)) and len(tracked_losses) == len(losses)
    _matches(tracked, figures)


def test_track_is_refused_while_the_loop_runs(tmp_path: Path, sqlite_url: str) -> None:
    from selfloop.lock import LoopLock

    config = tiny_yaml(tmp_path, sqlite_url, loop__max_iterations=1)
    assert selfloop_cli("run", "--config", str(config)).returncode == 0
    db = open_database(sqlite_url)
    with LoopLock(db, "tiny", "daemon"):
        out = selfloop_cli("track", "tiny", "--to", "mlflow", "--db", sqlite_url)
    db.dispose()
    assert out.returncode == 4 and "in use by daemon" in out.stderr
    assert os.path.exists(sqlite_url.removeprefix("sqlite:///"))


def _phase_status(url: str, phase: str) -> str | None:
    from selfloop.db.models import PhaseRun

    db = open_database(url)
    with db.session() as s:
        status = s.scalar(select(PhaseRun.status).join(Iteration, Iteration.id == PhaseRun.iteration_id)
                          .where(Iteration.number == 1, PhaseRun.phase == phase))
    db.dispose()
    return status


def test_steps_stream_while_the_train_phase_runs_and_a_rerun_follows_on_the_axis(tmp_path: Path, sqlite_url: str) -> None:
    """The loop waits inside its first train phase after two steps (a failpoint): MLflow already has those two
    steps while the phase is still running. Killed there and resumed, the phase starts over: its steps follow the
    two on the global step axis, so MLflow holds the two, then every stored step once, in order."""
    import signal
    import sqlite3

    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = tiny_yaml(tmp_path, sqlite_url, tracking={"mlflow": {"enabled": True, "tracking_uri": mlflow_uri},
                                                       "stream_every_s": 0.5})
    env = {"SELFLOOP_FAILPOINT": "train.after_step:2:wait", "SELFLOOP_FAILPOINT_GATE": str(tmp_path / "never")}
    proc = selfloop_process("run", "--config", str(config), env=env, start_new_session=True)
    try:
        deadline, live = time.monotonic() + 180, []
        while time.monotonic() < deadline and proc.poll() is None:
            if (tmp_path / "mlflow.db").exists():
                try:
                    live = _live_losses(tmp_path / "mlflow.db", "tiny")
                except sqlite3.Error:  # the loop's MLflow has not made its tables yet
                    live = []
                if len(live) == 2:
                    break
            time.sleep(0.5)
        assert len(live) == 2, proc.output()[1][-3000:]
        assert _phase_status(sqlite_url, "train") == "running"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    out = selfloop_cli("resume", "tiny", "--config", str(config))
    assert out.returncode == 0, out.stderr[-3000:]
    losses, figures = _store(sqlite_url, "tiny")
    tracked = _mlflow_history(mlflow_uri, "tiny")["train/loss"]
    assert len(tracked) == 2 + len(losses)
    assert all(_close(a, b) for a, b in zip(tracked[2:], losses, strict=True))
    assert all(_close(a, b) for a, b in zip(tracked[:2], losses[:2], strict=True)), "the same seed: the same first steps"
    _matches(_mlflow(mlflow_uri, "tiny")[1], figures)


class _Trickler:
    """A hostile HTTP server (a socket of the test's own, not MLflow): it answers every request one byte every
    half second, forever, so no single read waits long enough for a socket timeout."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import threading

        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn) -> None:
        try:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * 100_000:
                if self.stop.is_set():
                    break
                conn.sendall(bytes([byte]))
                time.sleep(0.5)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def test_a_trickling_tracking_server_fails_within_the_deadline(tmp_path: Path, sqlite_url: str) -> None:
    """The trial: an MLflow server trickling one byte every 0.5 s held `selfloop track` for 240 s (MLflow's timeout
    is per socket read), wrote no tracking.failed row while the loop ran, and held its exit for 30 s. Each call
    now ends within about twice tracking.mlflow.timeout_s (2 s here)."""
    server = _Trickler()
    try:
        config = tiny_yaml(tmp_path, sqlite_url, loop__max_iterations=1,
                           tracking={"mlflow": {"enabled": True, "tracking_uri": server.url, "timeout_s": 2}})
        started = time.monotonic()
        out = selfloop_cli("run", "--config", str(config))
        took = time.monotonic() - started
        assert out.returncode == 0, out.stderr[-3000:]
        db = open_database(sqlite_url)
        with db.session() as s:
            warnings = s.scalars(select(Event.message).where(Event.kind == "tracking.failed")).all()
        db.dispose()
        assert len(warnings) == 1 and "did not finish within 9 s" in warnings[0], warnings
        started = time.monotonic()
        out = selfloop_cli("track", "tiny", "--to", "mlflow", "--config", str(config))
        assert out.returncode == 1 and time.monotonic() - started < 30, (time.monotonic() - started, out.stderr[-2000:])
        assert out.stderr.startswith(f"selfloop: error: mlflow at {server.url} failed") and "within 9 s" in out.stderr
        assert took < 120, took
    finally:
        server.close()


def test_what_a_trl_user_looks_for_reaches_mlflow(tmp_path: Path, sqlite_url: str) -> None:
    """TRL's DPO figures per step (rewards/chosen, rewards/rejected, rewards/margins, logps/...), a `correct` column in
    each iteration's completions table, and MLflow's system metrics while the loop runs."""
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # The judge scores by its distribution over the score tokens, so the random tiny model's samples get distinct
    # scores and DPO has pairs (as in test_algorithms_loop.py).
    config = tiny_yaml(tmp_path, sqlite_url, loop__max_iterations=1, train__algorithm="dpo",
                       judge__llm_judge={"k": 1, "max_new_tokens": 0, "scoring": "distribution"},
                       tracking={"mlflow": {"enabled": True, "tracking_uri": mlflow_uri, "system_metrics": True}})
    # MLflow's monitor publishes only after its first interval, here longer than the whole tiny run: the system
    # metrics the run holds are the closing sample the tracker takes as the process ends (on a busy CI machine the
    # monitor's first round could outlast a short run and leave none).
    out = selfloop_cli("run", "--config", str(config), env={"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "600"}, fresh=True)
    assert out.returncode == 0, out.stderr[-3000:]
    history = _mlflow_history(mlflow_uri, "tiny")
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                "logps/rejected"):
        assert f"train/{key}" in history, sorted(history)
    stored = _step_metrics(sqlite_url)
    assert [round(v, 4) for v in history["train/rewards/margins"]] == [round(v, 4) for v in stored["rewards/margins"]]
    table = _mlflow_artifact(mlflow_uri, "tiny", "completions/iteration-0001.json")
    assert table["columns"][-1] == "correct" and {row[-1] for row in table["data"]} <= {True, False, None}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    [run] = client.search_runs([client.get_experiment_by_name("selfloop").experiment_id])
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics), (sorted(run.data.metrics), out.stderr[-3000:])

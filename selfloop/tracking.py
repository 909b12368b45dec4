"""MLflow and W&B as views of the store: one tracker run per loop, fed from the database.

The database stays the record of truth. A sync reads what the tracker has not received yet (marks in
`tracker_runs`) and sends it: the config as parameters, the training steps of each iteration as they are
written (one global step axis across iterations), each finished iteration's figures
(judge, vote, drift, selection, evals with their intervals, promoted), events as tags or notes, and
optionally each adapter as an artifact. A fork's run names its parent's run and the fork iteration.

While a loop runs, syncs happen on a background thread after each phase and every
`tracking.stream_every_s` seconds in between (a running train phase's steps make a live curve): a tracker
that is slow, fails or is unreachable never stops or slows the loop; it gets a warning event and is retried
after `tracking.retry_every_s` or at the next phase's end. `selfloop track LOOP` runs the same sync from
the start for a loop that was not tracked, or after an outage (backfill). Each backend is imported only
when used (`selfloop[mlflow]`, `selfloop[wandb]`).
"""

from __future__ import annotations

import logging
import math
import os
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger
from sqlalchemy.orm import Session

from selfloop.config import Config
from selfloop.db import history
from selfloop.db.engine import Database
from selfloop.db.models import Loop, TrackerRun
from selfloop.db.queries import COMPLETION_COLUMNS, add_event, completions, loop_by_name, row
from selfloop.render import flat

if TYPE_CHECKING:
    from selfloop.db.models import TrainStep


def bound_http_requests(timeout_s: int) -> None:
    """MLflow retries a request 7 times with exponential backoff and a 120 s timeout by default (minutes for an
    address where nothing answers): bound this process's requests to `timeout_s` and one retry, unless the
    environment sets MLflow's own variables."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    # urllib3 logs each retry; the failure itself is reported once (a tracking.failed event, or track's error line).
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


class Deadlined:
    """An MlflowClient whose every call ends within `seconds`, whatever the server does: MLflow's timeout is
    per socket read, so a server that trickles a byte every half second held `selfloop track` for minutes and
    a running loop's tracker thread past its exit. A call past its deadline raises TimeoutError (a
    tracking.failed event, or track's error line); its thread is left to finish on its own (a daemon thread)."""

    def __init__(self, client: Any, seconds: float, slow_calls: dict[str, float] | None = None) -> None:
        self._client, self._seconds, self._slow = client, seconds, slow_calls or {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        limit = self._slow.get(name, self._seconds)

        def call(*args: Any, **kwargs: Any) -> Any:
            box: dict[str, Any] = {}

            def run() -> None:
                try:
                    box["value"] = method(*args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                    box["error"] = exc

            worker = threading.Thread(target=run, name=f"mlflow-{name}", daemon=True)
            worker.start()
            worker.join(limit)
            if worker.is_alive():
                raise TimeoutError(f"MLflow's {name} did not finish within {limit:.0f} s (a slow or stuck server)")
            if "error" in box:
                raise box["error"]
            return box.get("value")

        return call


class MLflowBackend:
    """An MLflow run per loop, through MlflowClient (no global state): metrics by step, params, tags."""

    name = "mlflow"

    def __init__(self, config: Config) -> None:
        from mlflow.tracking import MlflowClient

        cfg = config.tracking.mlflow
        bound_http_requests(cfg.timeout_s)
        uri = cfg.tracking_uri or f"sqlite:///{config.state_dir() / 'mlflow.db'}"
        from selfloop.db.engine import same_database
        from selfloop.errors import SelfloopError

        if not uri.startswith(("http:", "https:", "databricks")) and same_database(uri, config.database_url()):
            raise SelfloopError("tracking.mlflow.tracking_uri is selfloop's own store: MLflow would create its tables "
                                "inside it; give MLflow a database of its own")
        # A local store keeps its artifacts beside it (MLflow's default is the working directory);
        # a tracking server decides for itself.
        local = uri.startswith("sqlite:///")
        self.artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "mlflow-artifacts").as_uri() if local else None
        # Each request waits timeout_s and is retried once: a call ends within about twice that, or fails.
        client = Deadlined(MlflowClient(tracking_uri=uri), 2 * cfg.timeout_s + 5,
                           {"log_artifacts": 60 * cfg.timeout_s})  # an adapter's upload may take a while
        self.client, self.experiment, self.log_adapters = client, cfg.experiment, cfg.log_adapters
        self.uri, self.system_metrics = uri, cfg.system_metrics
        self.live = False  # set by a running loop's Tracking: system metrics describe the machine running it
        self.monitor: Any = None
        self.run_id: str | None = None

    @property
    def is_open(self) -> bool:
        return self.run_id is not None

    def open(self, run_id: str | None, loop: str, params: dict[str, str], tags: dict[str, str]) -> str:
        from mlflow.entities import Param, RunTag

        if run_id is None:
            experiment = self.client.get_experiment_by_name(self.experiment)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
                self.experiment, artifact_location=self.artifacts)
            run_id = self.client.create_run(experiment_id, run_name=loop, tags=tags).info.run_id
            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(items), 100):
                self.client.log_batch(run_id, params=items[i:i + 100])
        else:
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.run_id = run_id
        if self.live and self.system_metrics and self.monitor is None:
            self._start_system_metrics(run_id)
        return run_id

    def _start_system_metrics(self, run_id: str) -> None:
        """MLflow's own monitor (a thread sampling psutil) on this run, while the loop runs; a missing psutil is a
        warning, never a failure of the tracker."""
        try:
            import psutil  # noqa: F401 - MLflow's monitor needs it
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        except ImportError as exc:
            logger.warning("tracking.mlflow.system_metrics: {} is not installed (pip install psutil)", exc.name)
            return
        self.monitor = SystemMetricsMonitor(run_id, resume_logging=True, tracking_uri=self.uri)
        self.monitor.start()

    def _last_system_sample(self) -> None:
        """One sample taken as the loop's process ends: the monitor publishes only after its first interval and a
        round trip to the store, which a short run (or a busy machine) can outlast, leaving the run with none."""
        try:
            self.monitor.collect_metrics()
            self.monitor.publish_metrics(self.monitor.aggregate_metrics())
            self.monitor.mlflow_logger.flush()
        except Exception as exc:  # noqa: BLE001 - system metrics never fail the tracker
            logger.warning("tracking.mlflow.system_metrics: the last sample was not sent ({})", exc)

    def log_steps(self, steps: list[tuple[int, dict[str, float]]]) -> None:
        from mlflow.entities import Metric as MlflowMetric

        now = int(time.time() * 1000)
        batch = [MlflowMetric(f"train/{k}", v, now, step) for step, values in steps for k, v in values.items()]
        for i in range(0, len(batch), 500):
            self.client.log_batch(self.run_id, metrics=batch[i:i + 500])

    def log_iteration(self, iteration: int, _global_step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric as MlflowMetric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[MlflowMetric(f"iteration/{k}", v, now, iteration) for k, v in values.items()])

    def log_completions(self, iteration: int, _global_step: int, rows: list[list[Any]]) -> None:
        """A JSON artifact per iteration (columns and rows, as MLflow's tables; no pandas needed)."""
        if rows:
            self.client.log_dict(self.run_id, {"columns": COMPLETION_COLUMNS, "data": rows},
                                 f"completions/iteration-{iteration:04d}.json")

    def log_events(self, events: list[tuple[int, str]]) -> None:
        from mlflow.entities import RunTag

        if events:
            self.client.log_batch(self.run_id, tags=[RunTag(f"event.{eid:06d}", text[:5000]) for eid, text in events])

    def log_adapter(self, path: Path, iteration: int) -> None:
        if self.log_adapters:
            self.client.log_artifacts(self.run_id, str(path), f"adapters/iteration-{iteration:04d}")

    def close(self, finished: bool) -> None:
        if self.monitor is not None:
            self.monitor.finish()  # joins its thread and sends what it sampled
            self._last_system_sample()
            self.monitor = None
        if self.run_id is not None and finished:
            self.client.set_terminated(self.run_id)
        self.run_id = None


class WandbBackend:
    """A W&B run per loop: train metrics on the global step; iteration figures on their own axis."""

    name = "wandb"

    def __init__(self, config: Config) -> None:
        self.cfg, self.dir = config.tracking.wandb, config.tracking.wandb.dir or config.state_dir()
        self.run: Any = None  # a wandb Run once open
        # W&B merges what is logged at one step into one row and drops a step below the last one logged, so
        # each global step is shifted by `offset` where it would not grow (an iteration without training
        # steps, a resumed run): no figure is merged away or dropped. `figures_at`: the last iteration row.
        self.step, self.offset, self.figures_at = -1, 0, -1

    @property
    def is_open(self) -> bool:
        return self.run is not None

    def open(self, run_id: str | None, loop: str, params: dict[str, str], tags: dict[str, str]) -> str:
        import wandb

        from selfloop.private import private_dir

        private_dir(Path(self.dir))
        run_id = run_id or uuid.uuid4().hex[:8]
        self.run = wandb.init(
            id=run_id, resume="allow", project=self.cfg.project, entity=self.cfg.entity, mode=self.cfg.mode,
            dir=str(self.dir), name=loop, config={"selfloop": params}, notes=tags.get("selfloop.note"),
            tags=[loop], settings=wandb.Settings(silent=True, console="off", x_disable_stats=not self.cfg.system_stats),
            reinit="create_new",
        )
        self.step = self.figures_at = max(self.step, self.run.step - 1)  # a resumed run's next step is run.step
        self.run.define_metric("iteration")
        self.run.define_metric("iteration/*", step_metric="iteration")
        self.run.config.update({"selfloop_tags": tags}, allow_val_change=True)
        return run_id

    def _at(self, global_step: int, lowest: int) -> int:
        """The W&B step for a global step: shifted (for good) where it would fall below `lowest`."""
        step = global_step + self.offset
        if step < lowest:
            self.offset += lowest - step
            step = lowest
        self.step = step
        return step

    def log_steps(self, steps: list[tuple[int, dict[str, float]]]) -> None:
        for step, values in steps:
            self.run.log({f"train/{k}": v for k, v in values.items()}, step=self._at(step, self.step + 1))

    def log_iteration(self, iteration: int, global_step: int, values: dict[str, float]) -> None:
        # On its iteration's last training step's row, unless that row already holds an iteration's figures.
        self.figures_at = self._at(global_step, self.step + 1 if self.step == self.figures_at else self.step)
        self.run.log({"iteration": iteration, **{f"iteration/{k}": v for k, v in values.items()}}, step=self.step)

    def log_completions(self, iteration: int, _global_step: int, rows: list[list[Any]]) -> None:
        import wandb

        if rows:  # on the row of the iteration's figures, just logged
            self.run.log({f"completions/iteration-{iteration:04d}": wandb.Table(columns=COMPLETION_COLUMNS, data=rows)},
                         step=self.step)

    def log_events(self, events: list[tuple[int, str]]) -> None:
        if events:
            self.run.summary["events"] = [*self.run.summary.get("events", []), *[text for _, text in events]]

    def log_adapter(self, path: Path, iteration: int) -> None:
        if self.cfg.log_adapters:
            import wandb

            artifact = wandb.Artifact(f"{self.run.name}-iteration-{iteration:04d}", type="lora")
            artifact.add_dir(str(path))
            self.run.log_artifact(artifact)

    def close(self, _finished: bool) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


BACKENDS: dict[str, Callable[[Config], Any]] = {"mlflow": MLflowBackend, "wandb": WandbBackend}


def enabled_backends(config: Config) -> list[str]:
    return [name for name in BACKENDS if getattr(config.tracking, name).enabled]


def step_metrics(stored: dict[str, Any] | None) -> dict[str, float]:
    """Every finite number an algorithm stored with a training step (DPO's reward margin and accuracy, TTRL's
    clip fraction and mean reward, ...): what TRL's users watch beside the loss."""
    return {key: float(value) for key, value in (stored or {}).items()
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)}


@dataclass
class _Pending:
    steps: list[tuple[int, dict[str, float]]]
    # number, global step, figures, adapter path, completions table rows
    iterations: list[tuple[int, int, dict[str, float], str | None, list[list[Any]]]]
    events: list[tuple[int, str]]
    steps_through: int
    last_event: int
    live: tuple[int, int]  # (attempt, steps sent) of the train phase running after steps_through; (0, 0): none


def _step_values(row: TrainStep, number: int) -> dict[str, float]:
    return {**step_metrics(row.metrics), "loss": row.loss, "learning_rate": row.learning_rate,
            "grad_norm": row.grad_norm, "tokens_per_s": row.tokens_per_s, "iteration": float(number)}


def _pending(session: Session, loop: Loop, mark: TrackerRun) -> _Pending:
    """What the tracker has not received, in iteration order so that every step axis only grows: the
    training steps of each iteration as they are written (a running train phase's too: a live curve), then
    its figures once it is done. A train phase that is run again (after a crash or a stop) writes its steps
    from 0 again: they follow what was sent on the global axis, so the tracker shows both attempts."""
    iterations = history.iterations_of(session, loop.id)
    trains = history.train_phases(session, [i.id for i in iterations])
    steps, global_step, steps_through, step_after = [], mark.steps_logged, mark.steps_through, {}
    live = (mark.live_attempt, mark.live_steps)
    for it in iterations:
        if it.number <= mark.steps_through:
            continue
        train = trains.get(it.id)
        if train is not None and (train.status == "done" or train.status == "running"):
            sent = live[1] if live[0] == train.attempts else 0
            rows = history.train_steps(session, it.id)
            for row in rows[sent:]:
                steps.append((global_step, _step_values(row, it.number)))
                global_step += 1
            if train.status == "running":
                live = (train.attempts, max(sent, len(rows)))
                break  # later iterations wait for this one's steps
            live = (0, 0)
        elif it.status != "done":
            break  # not trained yet: later steps wait for this iteration's
        steps_through, step_after[it.number] = it.number, max(global_step - 1, 0)
    figures = []
    for it in iterations:
        if it.number <= mark.iterations_logged or it.status != "done" or it.number > steps_through:
            continue
        values = history.iteration_figures(session, it)
        path = history.checkpoint_path(session, it.output_checkpoint_id)
        figures.append((it.number, step_after.get(it.number, max(global_step - 1, 0)), values, path, completions(session, it.id)))
    events = [(e.id, f"{e.level} {e.kind}: {e.message}") for e in history.events_after(session, loop.id, mark.last_event_id)]
    return _Pending(steps, figures, events, steps_through, events[-1][0] if events else mark.last_event_id, live)


def sync(db: Database, config: Config, backend_name: str, backend: Any) -> tuple[int, bool]:
    """Send the loop's rows the tracker has not received yet (opening its run if needed); return how many
    items were sent and whether the loop is finished (the caller closes the run then)."""
    with db.session() as session:
        loop = loop_by_name(session, config.loop.name)
        if loop is None:
            return 0, False
        mark = history.tracker_mark(session, loop.id, backend_name)
        tags = {"selfloop.loop": loop.name, "selfloop.seed": str(loop.seed)}
        if loop.parent_loop_id is not None:
            parent = row(session, Loop, loop.parent_loop_id)
            parent_mark = history.tracker_mark(session, parent.id, backend_name)
            parent_run = parent_mark.run_id if parent_mark else None
            tags |= {"selfloop.parent_loop": parent.name, "selfloop.fork_iteration": str(loop.parent_iteration)}
            if parent_run:
                tags["selfloop.parent_run_id"] = parent_run
            tags["selfloop.note"] = f"fork of {parent.name} at iteration {loop.parent_iteration}"
        params = flat(loop.config)
        pending = _pending(session, loop, mark or TrackerRun(steps_logged=0, steps_through=0, iterations_logged=0,
                                                             last_event_id=0, live_attempt=0, live_steps=0))
        run_id = mark.run_id if mark else None
        loop_id, finished = loop.id, loop.status == "finished"
    sent = len(pending.steps) + len(pending.iterations) + len(pending.events)
    if run_id is not None and not sent:
        return 0, finished  # nothing new: do not reopen a run that was closed
    if not backend.is_open:
        run_id = backend.open(run_id, config.loop.name, params, tags)
    # Each iteration's steps, then its figures, then the next iteration's: W&B keeps one row per step and
    # drops a step below the last, so figures sent after every step of a batch would share the last row.
    steps = list(pending.steps)
    for number, global_step, values, path, rows in pending.iterations:
        upto = next((i for i, (step, _) in enumerate(steps) if step > global_step), len(steps))
        backend.log_steps(steps[:upto])
        steps = steps[upto:]
        backend.log_iteration(number, global_step, values)
        backend.log_completions(number, global_step, rows)
        if path:
            backend.log_adapter(config.checkpoint_dir(path), number)
    backend.log_steps(steps)
    backend.log_events(pending.events)
    with db.session() as session:
        mark = history.tracker_mark(session, loop_id, backend_name)
        if mark is None:
            mark = TrackerRun(loop_id=loop_id, backend=backend_name, run_id=run_id, steps_logged=0, steps_through=0,
                              iterations_logged=0, last_event_id=0)
            session.add(mark)
        mark.steps_logged += len(pending.steps)
        mark.steps_through = max(mark.steps_through, pending.steps_through)
        if pending.iterations:
            mark.iterations_logged = pending.iterations[-1][0]
        mark.last_event_id = pending.last_event
        mark.live_attempt, mark.live_steps = pending.live
        mark.updated_at = datetime.now(UTC)
    return sent, finished


class Tracking:
    """Background syncs while a loop runs: `poke()` after each phase, `close()` at the end (bounded wait)."""

    def __init__(self, db: Database, config: Config) -> None:
        self.db, self.config = db, config
        self.names = enabled_backends(config)
        self._backends: dict[str, Any] = {}
        self._wake, self._stop = threading.Event(), threading.Event()
        self._failing: set[str] = set()
        self._retry_at: dict[str, float] = {}
        self._finished = False
        self._thread = threading.Thread(target=self._work, name="tracking", daemon=True)
        if self.names:
            self._thread.start()

    def poke(self) -> None:
        self._wake.set()

    def _work(self) -> None:
        cfg = self.config.tracking
        period = min(cfg.stream_every_s or cfg.retry_every_s, cfg.retry_every_s)
        while not self._stop.is_set():
            poked = self._wake.wait(timeout=period)
            self._wake.clear()
            self._sync_all(retry=poked)

    def _sync_all(self, retry: bool = True) -> None:
        """Sync every tracker; one that failed is tried again only after retry_every_s, or at a phase's end."""
        for name in self.names:
            if name in self._failing and not retry and time.monotonic() < self._retry_at.get(name, 0.0):
                continue
            try:
                backend = self._backends.get(name) or BACKENDS[name](self.config)
                backend.live = True
                self._backends[name] = backend
                _, self._finished = sync(self.db, self.config, name, backend)
                if name in self._failing:
                    self._failing.discard(name)
                    logger.info("tracking: {} reachable again; caught up from the database", name)
            except Exception as exc:  # noqa: BLE001 - a tracker must never take the loop down
                self._backends.pop(name, None)
                self._retry_at[name] = time.monotonic() + self.config.tracking.retry_every_s
                if name not in self._failing:  # one warning per outage, not one per retry
                    self._failing.add(name)
                    self._warn(name, exc)

    def _warn(self, name: str, exc: Exception) -> None:
        text = textwrap.shorten(f"{exc.__class__.__name__}: {exc}", 600, placeholder=" ...")  # whole words, one line
        logger.warning("tracking: {} failed ({}); the database keeps everything, retried in {} s",
                       name, text, self.config.tracking.retry_every_s)
        try:
            with self.db.session() as session:
                loop = loop_by_name(session, self.config.loop.name)
                add_event(session, loop.id if loop else None, None, "tracking.failed",
                          f"{name}: {text}; retried later, `selfloop track` backfills", level="warning")
        except Exception:  # noqa: BLE001, S110 - the store itself is failing: the log line above stands
            pass

    def close(self, timeout_s: float = 30.0) -> None:
        if not self.names:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=timeout_s)
        if not self._thread.is_alive():
            self._sync_all()  # the last rows (the final iteration's figures)
        for backend in self._backends.values():
            try:
                backend.close(self._finished)
            except Exception:  # noqa: BLE001, S110 - a tracker failing to close must not fail the loop's end
                pass

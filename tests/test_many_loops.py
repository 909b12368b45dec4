"""Many loops on one store, watched live: two loops at once give the rows each gives alone; status
shows every process running a loop; /metrics and /health are scraped from running processes; quiet
failures become warnings; logs carry the loop, iteration and phase."""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import func, select

from selfloop.db.engine import open_database
from selfloop.db.models import Event, Iteration, Loop, PhaseRun, Prompt, Sample, TrainStep
from tests.conftest import make_config, selfloop_cli, selfloop_process, tiny_yaml

pytestmark = pytest.mark.integration


def _rows_of(url: str, loop: str) -> dict:
    """Everything one loop wrote, by table, and its samples' tokens (what must not depend on neighbours)."""
    db = open_database(url)
    with db.session() as s:
        loop_id = s.scalar(select(Loop.id).where(Loop.name == loop))
        its = select(Iteration.id).where(Iteration.loop_id == loop_id)
        out = {
            "iterations": s.scalar(select(func.count()).where(Iteration.loop_id == loop_id)),
            "prompts": s.scalar(select(func.count()).select_from(Prompt).where(Prompt.iteration_id.in_(its))),
            "samples": s.execute(select(Sample.token_ids).where(Sample.iteration_id.in_(its)).order_by(Sample.id)).scalars().all(),
            "steps": [round(x, 5) for x in s.scalars(select(TrainStep.loss).where(TrainStep.iteration_id.in_(its)).order_by(TrainStep.id))],
            "events": sorted(s.scalars(select(Event.kind).where(Event.loop_id == loop_id))),
        }
    db.dispose()
    return out


def _start(config: Path, *extra: str, env: dict | None = None):
    return selfloop_process(*extra, "--config", str(config), env=env)


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], dict[str, dict]]:
    """Each loop run alone in its own SQLite store: its configs and the rows it wrote (what a loop writes does
    not depend on the backend: the fault tests compare PostgreSQL runs with a SQLite one)."""
    tmp = tmp_path_factory.mktemp("alone")
    configs, rows = {}, {}
    for loop in ("alpha", "beta"):
        (tmp / loop).mkdir()
        url = f"sqlite:///{tmp / loop / 'selfloop.db'}"
        configs[loop] = tiny_yaml(tmp / loop, url, loop__name=loop, loop__max_iterations=1, loop__seed=1 if loop == "alpha" else 2)
        out = selfloop_cli("run", "--config", str(configs[loop]))
        assert out.returncode == 0, out.stderr[-2000:]
        rows[loop] = _rows_of(url, loop)
    assert rows["alpha"]["samples"] != rows["beta"]["samples"]  # two different loops, really
    return configs, rows


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_loops_at_once_write_what_each_writes_alone(alone: tuple[dict[str, Path], dict[str, dict]], tmp_path: Path,
                                                        request: pytest.FixtureRequest, backend: str) -> None:
    configs, rows = alone
    shared = f"sqlite:///{tmp_path / 'selfloop.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    procs = {loop: _start(configs[loop], "run", "--db", shared) for loop in configs}
    for proc in procs.values():
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        assert "database is locked" not in err
    for loop in configs:
        assert _rows_of(shared, loop) == rows[loop]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_for(predicate, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.parametrize("command", ["run", "daemon"])
def test_metrics_and_health_of_a_running_loop(tmp_path: Path, command: str) -> None:
    """Scrape a running process: its loop's figures; /health turns 503 while a phase hangs past stall_timeout_s."""
    url = f"sqlite:///{tmp_path / 'selfloop.db'}"
    port = _free_port()
    config = tiny_yaml(tmp_path, url, loop__stall_timeout_s=3, loop__max_iterations=1,
                       metrics={"enabled": command == "daemon", "port": port})
    gate = tmp_path / "gate"
    extra = ["--metrics-port", str(port)] if command == "run" else []
    proc = _start(config, command, *extra,
                  env={"SELFLOOP_FAILPOINT": "train.before_steps:1:wait", "SELFLOOP_FAILPOINT_GATE": str(gate)})
    base = f"http://127.0.0.1:{port}"
    try:
        db = open_database(url, init=True)

        def training() -> bool:
            with db.session() as s:
                return s.scalar(select(PhaseRun.status).where(PhaseRun.phase == "train")) == "running"

        _wait_for(training)
        code, body = _get(f"{base}/metrics")
        assert code == 200, body
        assert 'selfloop_iteration{loop="tiny"} 1.0' in body
        assert 'selfloop_phase{loop="tiny",phase="train"} 1.0' in body
        assert 'selfloop_promotions_total{loop="tiny"} 0.0' in body
        assert 'selfloop_events_total{level="info",loop="tiny"}' in body
        assert "selfloop_seconds_since_progress" in body
        time.sleep(4)  # the phase waits at the failpoint: no progress for longer than stall_timeout_s
        code, body = _get(f"{base}/health")
        assert code == 503 and json.loads(body)["status"] == "stalled"
        assert _get(f"{base}/nothing")[0] == 404
        request = urllib.request.Request(f"{base}/metrics", data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 405
        gate.touch()
        _wait_for(lambda: _get(f"{base}/health")[0] == 200 or proc.poll() is not None)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        db.dispose()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
    # After the run the figures are in the store: a metric per loop, read back through a new process.
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{base}/metrics", timeout=2)


def test_status_lists_every_process_running_a_loop(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'selfloop.db'}"
    gate = tmp_path / "gate"
    env = {"SELFLOOP_FAILPOINT": "train.before_steps:1:wait", "SELFLOOP_FAILPOINT_GATE": str(gate)}
    procs = []
    try:
        for loop in ("alpha", "beta"):
            (tmp_path / loop).mkdir()
            config = tiny_yaml(tmp_path / loop, url, loop__name=loop, loop__max_iterations=1)
            procs.append(_start(config, "run" if loop == "alpha" else "daemon", env=env))
        db = open_database(url, init=True)

        def both_training() -> bool:
            with db.session() as s:
                return s.scalar(select(func.count()).select_from(PhaseRun).where(
                    PhaseRun.phase == "train", PhaseRun.status == "running")) == 2

        _wait_for(both_training, 300)
        db.dispose()
        out = selfloop_cli("status", "--db", url)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert any(line.startswith(f"run: loop alpha, pid {procs[0].pid}") and "iteration 1, train" in line for line in lines), out.stdout
        assert any(line.startswith(f"daemon: loop beta, pid {procs[1].pid}") and "iteration 1, train" in line for line in lines), out.stdout
        gate.touch()
        for proc in procs:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-2000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert "no process is running a loop" in selfloop_cli("status", "--db", url).stdout


def test_quiet_failures_become_warnings_and_logs_carry_the_loop(tmp_path: Path, sqlite_url: str) -> None:
    """The tiny random model parses no judge score and answers nothing right: both are warned about."""
    config = tiny_yaml(tmp_path, sqlite_url, loop__max_iterations=1, warnings={"min_examples": 10**6})
    out = selfloop_cli("--log-json", "run", "--config", str(config))
    assert out.returncode == 0, out.stderr[-2000:]
    db = open_database(sqlite_url)
    with db.session() as s:
        kinds = {kind: level for kind, level in s.execute(select(Event.kind, Event.level))}
    db.dispose()
    assert kinds["judge.parse_rate_low"] == "warning"
    assert kinds["eval.low_accuracy"] == "warning"
    assert kinds["select.few"] == "warning"
    records = [json.loads(line)["record"] for line in out.stderr.splitlines() if line.startswith("{")]
    in_phase = [r for r in records if r["extra"].get("phase") == "train"]
    assert in_phase and all(r["extra"]["loop"] == "tiny" and r["extra"]["iteration"] == 1 for r in in_phase)
    messages = [r["message"] for r in records]
    assert any(m.startswith("tiny iteration 1: rollout done in ") and "samples" in m for m in messages), messages
    assert any(m.startswith("tiny iteration 1: train done in ") and "loss" in m for m in messages), messages
    assert not any("Loading weights" in line for line in out.stderr.splitlines())  # third-party bars silenced


def test_an_upgrade_that_adds_fields_and_a_raised_limit_are_recorded(tmp_path: Path, sqlite_url: str) -> None:
    """A stored config without this version's new sections still opens; a raised max_iterations is stored."""
    from selfloop.loop import open_loop

    config = make_config(tmp_path, sqlite_url, loop={"name": "test", "state_dir": str(tmp_path / "state"), "seed": 7,
                                                     "max_iterations": 1})
    db = open_database(sqlite_url, init=True)
    loop = open_loop(db, config)
    with db.session() as s:
        row = s.get(Loop, loop.id)
        stored = dict(row.config)
        stored.pop("warnings")  # as written by a version that did not have the section
        row.config = stored
    config.loop.max_iterations = 3
    open_loop(db, config)
    with db.session() as s:
        row = s.get(Loop, loop.id)
        assert row.config["loop"]["max_iterations"] == 3 and "warnings" in row.config
        assert s.scalar(select(Event.message).where(Event.kind == "loop.config_updated")).endswith("loop.max_iterations")
    db.dispose()

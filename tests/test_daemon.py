"""The daemon's pieces, one pass at a time: the schedule, maintenance jobs, systemd notification and
the watchdog, the lock, and the unit file."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from selfloop import maintenance
from selfloop.config import load_config
from selfloop.daemon import Daemon
from selfloop.db.engine import open_database
from selfloop.db.models import Checkpoint, Iteration, Loop
from selfloop.progress import HEARTBEAT
from selfloop.systemd import Notifier, Watchdog
from tests.conftest import REPO, tiny_yaml


class FakeSystemd:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET; collects every message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def lines(self) -> list[str]:
        return [line for _, m in self.messages for line in m.splitlines()]

    def close(self) -> None:
        self._stop.set()
        self.thread.join()
        self.sock.close()


def test_scheduler_jobs(tmp_path: Path, sqlite_url: str) -> None:
    config = load_config(tiny_yaml(tmp_path, sqlite_url, schedule={"mode": "cron", "cron": "30 2 * * *", "backup_every_minutes": 60,
                                                                   "retention_every_minutes": 0}))
    scheduler = Daemon(config)._scheduler(db=None)
    jobs = {j.id: j for j in scheduler.get_jobs()}
    assert set(jobs) == {"iteration", "backup", "wal_checkpoint"}  # retention switched off
    fire = jobs["iteration"].trigger.get_next_fire_time(None, datetime(2026, 11, 21, 12, 0, tzinfo=UTC))
    assert fire == datetime(2026, 11, 22, 2, 30, tzinfo=UTC)  # nights only: the next 02:30 UTC
    assert jobs["backup"].trigger.interval.total_seconds() == 3600
    continuous = Daemon(load_config(tiny_yaml(tmp_path, sqlite_url)))._scheduler(db=None)
    assert "iteration" not in {j.id for j in continuous.get_jobs()}  # continuous mode needs no trigger


def test_notifier_and_watchdog_stop_when_progress_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeSystemd(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(fake.path))
    notifier = Notifier()
    notifier.ready("tiny: started")
    dog = Watchdog(notifier, interval=0.05, stall_after=0.4)
    dog.start()
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:  # progress: pings flow
        HEARTBEAT.beat()
        time.sleep(0.02)
    flowing = dog.pings
    time.sleep(1.0)  # a hung phase: no heartbeat for longer than stall_after
    stalled_at = dog.pings
    time.sleep(0.5)
    dog.stop()
    fake.close()
    assert flowing >= 5 and dog.stalled
    assert dog.pings == stalled_at, "pings must stop while no progress is made"
    assert stalled_at - flowing <= 8  # at most stall_after / interval pings after the last beat
    lines = fake.lines()
    assert lines[0] == "READY=1" and "STATUS=tiny: started" in lines and lines.count("WATCHDOG=1") == dog.pings


def _checkpoint(session, loop_id: int, number: int, path: Path, promoted: bool | None, status: str = "done") -> int:
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"x")
    ckpt = Checkpoint(path=str(path), sha256="0" * 64, kind="lora", base_model="tiny", size_bytes=1)
    session.add(ckpt)
    session.flush()
    session.add(Iteration(loop_id=loop_id, number=number, status=status, promoted=promoted, output_checkpoint_id=ckpt.id))
    return ckpt.id


def test_retention_keeps_promoted_current_and_newest(tmp_path: Path, sqlite_url: str) -> None:
    config = load_config(tiny_yaml(tmp_path, sqlite_url, schedule={"keep_checkpoints": 1}))
    db = open_database(sqlite_url, init=True)
    root = tmp_path / "ckpts"
    with db.session() as s:
        loop = Loop(name="r", base_model="tiny", config={}, config_hash="h", main_metric="a/b", seed=0)
        s.add(loop)
        s.flush()
        ids = [
            _checkpoint(s, loop.id, 1, root / "1", promoted=True),  # promoted: kept
            _checkpoint(s, loop.id, 2, root / "2", promoted=False),  # rejected, old: deleted
            _checkpoint(s, loop.id, 3, root / "3", promoted=False),  # rejected, old: deleted
            _checkpoint(s, loop.id, 4, root / "4", promoted=False),  # the loop's start (a fork's): kept
            _checkpoint(s, loop.id, 5, root / "5", promoted=False),  # newest other: kept (K = 1)
            _checkpoint(s, loop.id, 6, root / "6", promoted=None, status="running"),  # unfinished iteration: kept
        ]
        loop.start_checkpoint_id = ids[3]
    removed = maintenance.retention(db, config)
    assert sorted(p.name for p in removed) == ["2", "3"]
    with db.session() as s:
        status = dict(s.execute(select(Checkpoint.id, Checkpoint.status)).all())
    assert [status[i] for i in ids] == ["ok", "deleted", "deleted", "ok", "ok", "ok"]
    assert sorted(p.name for p in root.iterdir()) == ["1", "4", "5", "6"]
    assert maintenance.retention(db, config) == []  # a second pass finds nothing more
    db.dispose()


def test_backup_is_consistent_and_rotated(tmp_path: Path, sqlite_url: str) -> None:
    config = load_config(tiny_yaml(tmp_path, sqlite_url, schedule={"backups_keep": 2}))
    db = open_database(sqlite_url, init=True)
    with db.session() as s:
        s.add(Loop(name="b", base_model="tiny", config={}, config_hash="h", main_metric="a/b", seed=0))
    paths = [maintenance.backup(db, config) for _ in range(3)]
    kept = sorted((config.state_dir() / "backups").iterdir())
    assert kept == sorted(paths[1:]) and all(p.stat().st_mode & 0o077 == 0 for p in kept)
    conn = sqlite3.connect(paths[-1])
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("SELECT name FROM loops").fetchall() == [("b",)]
    conn.close()
    maintenance.wal_checkpoint(db)
    assert Path(sqlite_url.removeprefix("sqlite:///") + "-wal").stat().st_size == 0
    db.dispose()


@pytest.mark.integration
@pytest.mark.parametrize(("unit_name", "instance"), [("selfloop.service", "selfloop.service"),
                                                  ("selfloop@.service", "selfloop@demo-cpu.service"),
                                                  ("selfloop-ui.service", "selfloop-ui.service")])
def test_unit_file_verifies_without_warnings(tmp_path: Path, unit_name: str, instance: str) -> None:
    """`systemd-analyze verify` on systemd/selfloop.service and an instance of the template
    systemd/selfloop@.service. It checks that ExecStart's binary exists, so the copy under test points
    ExecStart at this environment's selfloop; nothing else changes."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("SELFLOOP_REQUIRE_POSTGRES") == "1":  # CI installs systemd with PostgreSQL
            pytest.fail("systemd-analyze is missing (tests/support/services.sh installs it)")
        pytest.skip("systemd-analyze is not installed")
    binary = shutil.which("selfloop") or str(Path(os.sys.executable).parent / "selfloop")
    unit = (REPO / "systemd" / unit_name).read_text()
    if unit_name == "selfloop-ui.service":  # the dashboard: a plain service, bound to loopback
        assert "ExecStart=/opt/selfloop/.venv/bin/selfloop ui --config /etc/selfloop/loop.yaml --host 127.0.0.1" in unit
    else:
        assert "ExecStart=/opt/selfloop/.venv/bin/selfloop daemon" in unit
    if "@" in unit_name:
        assert "--config /etc/selfloop/%i.yaml" in unit
    copy = tmp_path / instance
    copy.write_text(unit.replace("/opt/selfloop/.venv/bin/selfloop", binary))
    out = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stderr.strip() == "" and out.stdout.strip() == "", out.stderr
    if unit_name == "selfloop-ui.service":
        for line in ("StateDirectory=selfloop", "UMask=0077", "NoNewPrivileges=yes", "ProtectSystem=strict",
                     "RestartPreventExitStatus=2 3"):
            assert line in unit
        return
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "RestartPreventExitStatus=2 3", "KillMode=mixed",
                 "StateDirectory=selfloop", "CacheDirectory=selfloop", "UMask=0077", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes"):
        assert line in unit
    assert "PrivateDevices=" not in unit and "MemoryDenyWriteExecute=" not in unit


@pytest.mark.integration
def test_raising_max_iterations_reopens_a_finished_loop_and_the_daemon_stops_when_done(tmp_path: Path,
                                                                                      sqlite_url: str) -> None:
    from selfloop.loop import run_iteration
    from selfloop.runner import run_loop
    from selfloop.runtime import Runtime
    from selfloop.signals import StopFlag
    from tests.conftest import make_config, selfloop_cli

    assert len(run_loop(make_config(tmp_path, sqlite_url, loop={"max_iterations": 1}), None, StopFlag())) == 1
    config = make_config(tmp_path, sqlite_url, loop={"max_iterations": 2})
    db = open_database(sqlite_url)
    seen: list[str] = []

    def status_now(loop: str, number: int, phase: str) -> None:
        with db.session() as session:
            seen.append(session.scalar(select(Loop.status).where(Loop.name == loop)))

    runtime = Runtime(config)
    try:
        assert run_iteration(db, config, runtime, on_phase=status_now).iteration == 2
    finally:
        runtime.close()
    assert seen and set(seen) == {"ready"}, "a loop running again must not show as finished"
    with db.session() as session:
        assert session.scalar(select(Loop.status)) == "finished"
    db.dispose()

    # On an hourly schedule the daemon runs the one iteration left at once, then stops instead of
    # waiting an hour for a trigger that can only find the loop finished.
    config_file = tiny_yaml(tmp_path, f"sqlite:///{tmp_path / 'daemon.db'}", loop__max_iterations=1,
                            schedule__mode="interval", schedule__every_minutes=60)
    out = selfloop_cli("daemon", "--config", str(config_file), timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "daemon stopping: loop tiny is finished" in out.stderr

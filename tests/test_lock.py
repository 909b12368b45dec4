"""One writer per loop, fenced: a second writer of a loop is refused (whichever path reaches the
database), other loops run beside it, and a writer whose lock was broken stops at its next commit."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text, update

from selfloop.db.engine import open_database
from selfloop.db.file_locks import LOOP_BASE as LOCK_BASE
from selfloop.db.leases import ADVISORY_CLASS
from selfloop.db.models import Event, PhaseRun, WriterLease
from selfloop.errors import LockedError, LockLost
from selfloop.lock import LoopLock, lock_offset
from tests.conftest import selfloop_cli, selfloop_process, table_counts, tiny_yaml


def _event(db, message: str) -> None:
    with db.session() as s:
        s.add(Event(level="info", kind="test", message=message))


def test_one_writer_per_loop_and_loops_side_by_side(db_url: str) -> None:
    db, other = open_database(db_url, init=True), open_database(db_url)
    with LoopLock(db, "a", "daemon"):
        with pytest.raises(LockedError, match=rf"loop 'a' is in use by daemon pid {os.getpid()}"):
            LoopLock(other, "a").acquire()
        with LoopLock(other, "b"):  # another loop on the same database
            _event(db, "a writes")
            _event(other, "b writes")
    with LoopLock(other, "a"):  # released: the next one gets it
        pass
    with db.session() as s:
        leases = {r.loop_name: (r.token, r.released_at is not None) for r in s.scalars(select(WriterLease))}
    assert leases == {"a": (2, True), "b": (1, True)}
    db.dispose()
    other.dispose()


def test_sqlite_lock_follows_the_real_file(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    db = open_database(f"sqlite:///{real / 'selfloop.db'}", init=True)
    via_link = open_database(f"sqlite:///{tmp_path / 'link' / 'selfloop.db'}")
    with LoopLock(db, "a"):
        with pytest.raises(LockedError):
            LoopLock(via_link, "a").acquire()
    db.dispose()
    via_link.dispose()


def test_a_writer_whose_lease_was_taken_is_fenced(sqlite_url: str) -> None:
    """The SQLite lock is held on the database file itself and cannot be broken from outside the process; the
    fence is what stops a writer whose lock went anyway. Give the lock up without the lease, as a lost lock would,
    and let a second writer take the loop."""
    db, other = open_database(sqlite_url, init=True), open_database(sqlite_url)
    first = LoopLock(db, "a").acquire()
    _event(db, "before")
    first._unlock()  # the lock is lost; the first writer does not know it
    second = LoopLock(other, "a").acquire()
    with pytest.raises(LockLost, match="lost the writer lock of loop 'a'"):
        _event(db, "after the take-over")
    _event(other, "the new writer writes")
    with other.session() as s:
        assert sorted(s.scalars(select(Event.message))) == ["before", "the new writer writes"]
    first.release()  # leaves the new holder's lease alone
    with other.session() as s:
        assert s.get(WriterLease, "a").released_at is None
    second.release()
    db.dispose()
    other.dispose()


def test_sqlite_lock_bytes_are_per_loop_and_above_sqlites_own() -> None:
    """Each loop locks its own byte of the database file, above SQLite's lock bytes (1 GiB to 1 GiB + 511) and
    above any database size; the byte is the same for a loop's name wherever it is computed."""
    offsets = {lock_offset(f"loop{i}") for i in range(1000)}
    assert len(offsets) == 1000 and min(offsets) >= LOCK_BASE > (1 << 30) + 512
    assert lock_offset("tiny") == lock_offset("tiny") and max(offsets) < LOCK_BASE + (1 << 40)


@pytest.mark.postgres
def test_a_writer_whose_lock_connection_was_killed_is_fenced(postgres_url: str, postgres_superuser_url: str) -> None:
    db, other = open_database(postgres_url, init=True), open_database(postgres_url)
    first = LoopLock(db, "a").acquire()
    _event(db, "before")
    admin = create_engine(postgres_superuser_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        killed = conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                                   "AND classid::int = :c AND granted"), {"c": ADVISORY_CLASS & 0xFFFFFFFF}).all()
    admin.dispose()
    assert killed == [(True,)]
    deadline = time.monotonic() + 10
    while True:  # the advisory lock goes when the killed backend has exited
        try:
            second = LoopLock(other, "a").acquire()
            break
        except LockedError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    with pytest.raises(LockLost):
        _event(db, "after the take-over")
    _event(other, "the new writer writes")
    with other.session() as s:
        assert sorted(s.scalars(select(Event.message))) == ["before", "the new writer writes"]
    first.release()
    second.release()
    db.dispose()
    other.dispose()


def _wait_for(predicate, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.integration
def test_a_running_loop_that_lost_its_lock_stops_before_writing(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A real process waits inside rollout; its lease is taken over (as a writer that broke its lock would);
    it goes on and must stop at its first commit with a one-line error, having written no sample."""
    url = f"sqlite:///{tmp_path / 'selfloop.db'}"
    config = tiny_yaml(tmp_path, url)
    gate = tmp_path / "gate"
    env = {"SELFLOOP_FAILPOINT": "rollout.start:1:wait", "SELFLOOP_FAILPOINT_GATE": str(gate)}
    a = selfloop_process("run", "--config", str(config), env=env)
    db = open_database(url, init=True)

    def rollout_started() -> bool:
        with db.session() as s:
            return s.scalar(select(PhaseRun.status).where(PhaseRun.phase == "rollout")) == "running"

    _wait_for(rollout_started)
    try:
        # What a writer that took the loop over does to the lease (the lock itself cannot be broken from outside).
        with db.session() as s:
            s.execute(update(WriterLease).where(WriterLease.loop_name == "tiny")
                      .values(token=WriterLease.token + 1, pid=1, kind="run", host="elsewhere"))
        gate.touch()
        _, err = a.communicate(timeout=300)
        assert a.returncode == 4, err[-2000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith("selfloop: error: lost the writer lock of loop 'tiny' to run pid 1 on elsewhere") \
            and "Traceback" not in err
        assert table_counts(url)["samples"] == 0
    finally:
        if a.poll() is None:
            a.send_signal(signal.SIGKILL)
            a.wait()
        db.dispose()
    out = selfloop_cli("resume", "tiny", "--config", str(config))
    assert out.returncode == 0, out.stderr[-2000:]
    clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
    (tmp_path / "c").mkdir()
    clean = selfloop_cli("run", "--config", str(tiny_yaml(tmp_path / "c", clean_url)))
    assert clean.returncode == 0, clean.stderr[-2000:]
    counts, expected = table_counts(url), table_counts(clean_url)
    assert counts == expected and counts["samples"] > 0

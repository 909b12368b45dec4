"""What an adversarial trial broke (issue 28), each case as it was tried: a second writer through a
hard link, readers that could signal or hold a writer's lock, reads and exports that were not bounded or
not atomic, and failures that ended in "unexpected error"."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from selfloop.db.engine import open_database
from selfloop.errors import LockedError, SelfloopError
from selfloop.lock import LoopLock


# -- a second writer through a hard link -----------------------------------------------------------------
def test_a_database_with_a_second_hard_link_is_refused_to_writers(tmp_path: Path, run_cli) -> None:
    db_path = tmp_path / "a" / "selfloop.db"
    db = open_database(f"sqlite:///{db_path}", init=True)
    db.dispose()
    (tmp_path / "b").mkdir()
    os.link(db_path, tmp_path / "b" / "selfloop.db")
    for path in (db_path, tmp_path / "b" / "selfloop.db"):
        with pytest.raises(SelfloopError, match="has 2 hard links"):
            open_database(f"sqlite:///{path}")
        code, _, err = run_cli("db", "upgrade", "--db", f"sqlite:///{path}")
        assert code == 1 and "has 2 hard links" in err and len(err.strip().splitlines()) == 1, err
    # Readers may still look (they cannot write, so they cannot corrupt it).
    assert run_cli("history", "--db", f"sqlite:///{db_path}")[0] == 0


def test_the_lock_is_keyed_by_the_files_identity(tmp_path: Path) -> None:
    """Two names of one file reach one lock: the lock is a byte of the database file itself, so neither the
    file's name nor its directory enters into it."""
    (tmp_path / "real").mkdir()
    db = open_database(f"sqlite:///{tmp_path / 'real' / 'selfloop.db'}", init=True)
    with LoopLock(db, "a"):
        other = open_database(f"sqlite:///{tmp_path / 'real' / '.' / 'selfloop.db'}")
        with pytest.raises(LockedError):
            LoopLock(other, "a").acquire()
        other.dispose()
    db.dispose()


def _bind_mount(source: Path, target: Path) -> bool:
    import subprocess

    target.touch()
    return os.geteuid() == 0 and subprocess.run(["mount", "--bind", str(source), str(target)],
                                                capture_output=True).returncode == 0


@pytest.mark.integration
def test_a_bind_mounted_database_file_has_one_writer_name(tmp_path: Path) -> None:
    """Needs root (mount --bind); skipped elsewhere. The file alone bind-mounted into another directory: two
    names, two directories, one inode, and SQLite would keep a WAL per name. While this process writes through
    the real name, a writer in another process through the alias is refused at open (whatever loop it names);
    readers may still look; once the real name's writer is gone, the alias may be used (and then the real name
    is refused in turn)."""
    import subprocess
    import sys

    (tmp_path / "real").mkdir()
    (tmp_path / "other").mkdir()
    real = tmp_path / "real" / "store.db"
    # Made in another process: a writer claims its name for the life of its process, and this one must not.
    subprocess.run([sys.executable, "-m", "selfloop", "db", "upgrade", "--db", f"sqlite:///{real}"], check=True,
                   capture_output=True, timeout=300)
    alias = tmp_path / "other" / "alias.db"
    if not _bind_mount(real, alias):
        pytest.skip("mount --bind needs root")
    probe = ("import sys; from selfloop.db.engine import open_database; from selfloop.lock import LoopLock\n"
             "from selfloop.errors import SelfloopError\n"
             "try:\n    db = open_database(sys.argv[1], deferred=sys.argv[3] == 'read')\n"
             "    LoopLock(db, sys.argv[2]).acquire() if sys.argv[3] == 'write' else db.dispose()\n"
             "except SelfloopError as e:\n    print(e); sys.exit(3)\n")

    def other_process(path: Path, loop: str, mode: str = "write") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", probe, f"sqlite:///{path}", loop, mode], capture_output=True,
                              text=True, timeout=120)

    try:
        assert os.stat(alias).st_ino == real.stat().st_ino
        out = subprocess.Popen([sys.executable, "-c", "import sys, time; from selfloop.db.engine import open_database; "
                                "from selfloop.lock import LoopLock; db = open_database(sys.argv[1]); "
                                "LoopLock(db, 'a', 'daemon').acquire(); print('held', flush=True); time.sleep(600)",
                                f"sqlite:///{real}"], stdout=subprocess.PIPE, text=True)
        try:
            assert out.stdout.readline().strip() == "held"
            for loop in ("a", "b"):
                refused = other_process(alias, loop)
                assert refused.returncode == 3 and "written through another path" in refused.stdout, refused.stderr[-2000:]
            same = other_process(real, "a")  # the same name, the same loop: the loop lock (on the file) refuses it
            assert same.returncode == 3 and "loop 'a' is in use by daemon" in same.stdout, same.stderr[-2000:]
            assert other_process(real, "b").returncode == 0  # another loop through the same name
            assert other_process(alias, "a", "read").returncode == 0
        finally:
            out.kill()
            out.wait()
        assert other_process(alias, "a").returncode == 0
    finally:
        subprocess.run(["umount", str(alias)], check=False)


def test_two_names_of_one_file_in_one_process_are_refused(tmp_path: Path) -> None:
    """The claim of a writer's name, in one process: a second name of the same file (here a hard link made after
    the first writer opened it, which the link check cannot see yet) is refused."""
    from selfloop.db.file_locks import claim_name

    (tmp_path / "a").mkdir()
    db = open_database(f"sqlite:///{tmp_path / 'a' / 'store.db'}", init=True)
    os.link(tmp_path / "a" / "store.db", tmp_path / "second.db")
    with pytest.raises(SelfloopError, match="through .*store.db; use one path"):
        claim_name(tmp_path / "second.db")
    db.dispose()


# -- PostgreSQL readers ----------------------------------------------------------------------------------
def _psycopg(url: str, autocommit: bool = True):
    import psycopg
    from sqlalchemy.engine import make_url

    return psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
                           autocommit=autocommit)


@pytest.fixture
def reader_url(postgres_reader_url: str) -> str:
    """A fresh read-only role of `selfloop db create-reader` on the test database (dropped afterwards)."""
    return postgres_reader_url


def _role(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).username


@pytest.mark.postgres
@pytest.mark.parametrize("granted", ["pg_signal_backend", "selfloop_test"])
def test_a_reader_that_can_become_a_powerful_role_is_refused(reader_url: str, postgres_superuser_url: str,
                                                             granted: str) -> None:
    """create-reader makes NOINHERIT roles; a NOINHERIT member of pg_signal_backend (or of the writer role)
    has none of its rights until `set_config('role', ...)`, which any statement can call."""
    from selfloop.db.user_sql import run_readonly
    from selfloop.errors import ReadOnlyViolation

    assert run_readonly(reader_url, "SELECT 1").rows == [(1,)]
    with _psycopg(postgres_superuser_url) as su:
        su.execute(f"GRANT {granted} TO {_role(reader_url)}")
    try:
        refused = f"(member of {granted}|can become role {granted}|is \\(or is a member of\\) a superuser)"
        with pytest.raises(ReadOnlyViolation, match=refused):
            run_readonly(reader_url, "SELECT set_config('role', 'pg_signal_backend', true), pg_terminate_backend(pg_backend_pid())")
    finally:
        with _psycopg(postgres_superuser_url) as su:
            su.execute(f"REVOKE {granted} FROM {_role(reader_url)}")


@pytest.mark.postgres
def test_a_reader_holding_the_loops_lock_key_cannot_keep_a_writer_out(postgres_url: str, reader_url: str) -> None:
    """The trial: `SELECT pg_advisory_lock(<the loop's keys>), pg_sleep(25)` through `selfloop sql` made `run` exit 4."""
    from selfloop.db.leases import ADVISORY_CLASS
    from selfloop.db.leases import int4 as _int4

    db = open_database(postgres_url)
    reader = _psycopg(reader_url)
    try:  # the trial's statement, held for as long as the test needs
        reader.execute("SELECT pg_advisory_lock(%s, %s)", (ADVISORY_CLASS, _int4(b"a")))
        first = LoopLock(db, "a").acquire()  # takes a fresh key
        with pytest.raises(LockedError, match="loop 'a' is in use by run pid"):
            LoopLock(db, "a").acquire()  # a second writer still finds the loop taken
        fresh = first._key
        assert fresh != _int4(b"a")
        first.release()
        with LoopLock(db, "a") as again:  # the next writer uses the recorded key
            assert again.token == 2 and again._key == fresh
    finally:
        reader.close()
        db.dispose()


# -- the metrics server ----------------------------------------------------------------------------------
def test_the_metrics_server_bounds_connections_and_checks_the_host(tmp_path: Path, sqlite_url: str,
                                                                   monkeypatch, capfd) -> None:
    """The trial: 1,000 idle connections made 1,007 threads and, closed, 1,300 BrokenPipe tracebacks."""
    import socket
    import threading
    import time

    import httpx

    from selfloop import metrics_http
    from selfloop.log import setup_logging
    from tests.conftest import make_config

    setup_logging("INFO")  # to this test's stderr (an earlier in-process CLI test left its own, closed, stream)
    monkeypatch.setattr(metrics_http, "CONNECTION_TIMEOUT_S", 1.0)
    open_database(sqlite_url, init=True).dispose()
    config = make_config(tmp_path, sqlite_url, metrics={"enabled": True, "port": 0})
    server = metrics_http.MetricsServer(config).start()
    port = server.httpd.server_address[1]
    threads = threading.active_count()
    idle = []
    try:
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(0.5)
        assert threading.active_count() <= threads + metrics_http.MAX_CONNECTIONS, threading.active_count()
        for sock in idle:  # half a request, then gone
            try:
                sock.sendall(b"GET /metrics HTTP/1.1\r\n")
            except OSError:
                pass  # already closed by the server (over the cap)
            sock.close()
        time.sleep(1.5)  # idle connections time out; the slots come back
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        assert httpx.get(f"{url}/health", headers={"Host": "localhost"}, timeout=5).status_code == 200
        refused = httpx.get(f"{url}/metrics", headers={"Host": "attacker.example"}, timeout=5)
        assert refused.status_code == 421 and "selfloop_" not in refused.text
    finally:
        server.stop()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err, err[-2000:]


def test_the_metrics_server_reads_through_connections_that_cannot_write(db_url: str, tmp_path: Path) -> None:
    """/metrics read through `open_database(readonly=True)`, which took any write; its own queries are now run on
    connections the database refuses to write through (SQLite mode=ro with an authorizer, a read-only session on
    PostgreSQL), so the README's "it cannot write" holds whatever runs there."""
    from sqlalchemy import text

    from selfloop import metrics_http
    from selfloop.errors import ReadOnlyViolation
    from tests.conftest import make_config

    open_database(db_url, init=True).dispose()
    config = make_config(tmp_path, db_url, metrics={"enabled": True, "port": 0})
    server = metrics_http.MetricsServer(config)
    try:
        with server.db.session() as session:
            assert session.execute(text("SELECT count(*) FROM loops")).scalar() == 0
        for statement in ("INSERT INTO events (level, kind, message) VALUES ('info', 'x', 'y')",
                          "CREATE TABLE scratch (x INTEGER)", "DELETE FROM loops"):
            with pytest.raises((ReadOnlyViolation, Exception)) as refused, server.db.session() as session:
                session.execute(text(statement))
            said = str(refused.value).lower()
            assert "not authorized" in said or "read-only" in said or "readonly" in said, said
    finally:
        server.db.dispose()
    db = open_database(db_url)
    with db.session() as session:
        assert session.execute(text("SELECT count(*) FROM events")).scalar() == 0
    db.dispose()


# -- selfloop sql ----------------------------------------------------------------------------------------
def test_sql_honours_selfloop_db(tmp_path: Path, run_cli, monkeypatch) -> None:
    """With another store in the state directory, `selfloop sql` read that one instead of $SELFLOOP_DB."""
    from tests.conftest import store_samples  # noqa: F401 - the fixture module, for its helpers' imports

    for name in ("state/selfloop.db", "other/selfloop.db"):
        open_database(f"sqlite:///{tmp_path / name}", init=True).dispose()
    with open_database(f"sqlite:///{tmp_path / 'other' / 'selfloop.db'}").session() as s:
        from selfloop.db.models import Event

        s.add(Event(level="info", kind="test", message="the other store"))
    monkeypatch.setenv("SELFLOOP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SELFLOOP_DB", f"sqlite:///{tmp_path / 'other' / 'selfloop.db'}")
    code, out, err = run_cli("sql", "--format", "csv", "SELECT message FROM events")
    assert code == 0 and "the other store" in out, err


def test_sql_bounds_the_bytes_it_keeps(sqlite_url: str) -> None:
    """200 rows of 16 MiB ended in MemoryError: rows past 64 MiB are not fetched, and the result says so."""
    from selfloop.db.user_sql import MAX_RESULT_BYTES, run_readonly

    open_database(sqlite_url, init=True).dispose()
    sql = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) "
           "SELECT i, hex(zeroblob(4 * 1024 * 1024)) AS big FROM n")  # 8 MiB of text a row
    result = run_readonly(sqlite_url, sql)
    kept = sum(len(r[1]) for r in result.rows)
    assert result.truncated and result.cut_by_size and kept <= MAX_RESULT_BYTES and len(result.rows) == 7
    small = run_readonly(sqlite_url, "SELECT 1 UNION ALL SELECT 2")
    assert small.rows == [(1,), (2,)] and not small.truncated


def test_sql_bounds_the_first_row_too(db_url: str, request: pytest.FixtureRequest) -> None:
    """The cap applied only after the first row: one row of 200 values of 16 MB used 3 GB (MemoryError) on SQLite,
    a 200 MB row 1.4 GB on PostgreSQL. A first row past the cap is refused in one line, and SQLite's memory for the
    statement is bounded (its process-wide limit is put back afterwards)."""
    import resource
    import sqlite3

    from selfloop.db.user_sql import run_readonly

    if db_url.startswith("sqlite"):
        open_database(db_url, init=True).dispose()
        reader_url = db_url
        columns = ", ".join(f"zeroblob(16000000) AS c{i}" for i in range(200))  # 3.2 GB in one row
        big = f"SELECT {columns}"
    else:
        reader_url = request.getfixturevalue("reader_url")  # this module's: a read-only role
        big = "SELECT repeat('x', 200 * 1000 * 1000) AS big"  # 200 MB in one value
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SelfloopError) as refused:
        run_readonly(reader_url, big)
    message = str(refused.value)
    assert "above the limit" in message or "more than" in message, message
    assert "\n" not in message
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    assert grew < 800 * 1024 * 1024, grew  # the trial's 3 GB and 1.4 GB did not happen
    assert run_readonly(reader_url, "SELECT 1 AS one").rows == [(1,)]
    assert sqlite3.connect(":memory:").execute("PRAGMA hard_heap_limit").fetchone()[0] == 0


@pytest.mark.postgres
def test_copy_through_a_reader_is_one_line(reader_url: str, run_cli) -> None:
    code, _, err = run_cli("sql", "--db", reader_url, "COPY loops TO STDOUT")
    assert code == 1 and "COPY is not run by `selfloop sql`" in err and len(err.strip().splitlines()) == 1, err
    assert run_cli("sql", "--db", reader_url, "SELECT 1")[0] == 0  # the next statement is not disturbed


# -- export, merge and the dashboard on a finished tiny loop ----------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, str]:
    """One iteration of the tiny loop (it has a checkpoint, samples and evals)."""
    from tests.conftest import selfloop_cli, tiny_yaml

    tmp = tmp_path_factory.mktemp("finished")
    url = f"sqlite:///{tmp / 'selfloop.db'}"
    config = tiny_yaml(tmp, url, loop__max_iterations=1)
    out = selfloop_cli("run", "--config", str(config))
    assert out.returncode == 0, out.stderr[-2000:]
    return config, url


@pytest.mark.integration
def test_export_writes_json_when_a_store_holds_infinite_sums(finished, tmp_path: Path, run_cli) -> None:
    """A store written before replies were bounded held -inf log-prob sums (replies of -1e308); export wrote
    `-Infinity`, which is not JSON, on 50 of 52 lines. Non-finite numbers are exported as null."""
    import json
    import shutil

    from sqlalchemy import text

    _, url = finished
    copy = tmp_path / "copy.db"
    shutil.copy(url.removeprefix("sqlite:///"), copy)
    db = open_database(f"sqlite:///{copy}")
    with db.session() as s:
        s.execute(text("UPDATE samples SET sum_logprob = -1e999, mean_logprob = -1e999 WHERE id % 2 = 0"))
    db.dispose()
    code, out, err = run_cli("export", "tiny", "--what", "samples", "--db", f"sqlite:///{copy}")
    assert code == 0, err
    rows = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} is not JSON")) for line in out.splitlines()]
    assert rows and any(r["mean_logprob"] is None for r in rows) and "Infinity" not in out


@pytest.mark.integration
def test_a_failed_export_leaves_the_existing_file_and_never_follows_a_link(finished, tmp_path: Path, run_cli) -> None:
    _, url = finished
    out = tmp_path / "samples.jsonl"
    out.write_text("yesterday's export\n")
    for args, message in ((["nope"], "no loop named 'nope'"), (["tiny", "--iteration", "9"], "has no iteration 9")):
        code, _, err = run_cli("export", *args, "--what", "samples", "--out", str(out), "--db", url)
        assert code == 1 and message in err, err
        assert out.read_text() == "yesterday's export\n"
    target = tmp_path / "elsewhere.txt"
    target.write_text("not yours\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    code, _, err = run_cli("export", "tiny", "--what", "samples", "--out", str(link), "--db", url)
    assert code == 1 and "a symbolic link" in err and target.read_text() == "not yours\n"
    code, _, err = run_cli("export", "tiny", "--what", "samples", "--out", str(out), "--db", url)
    assert code == 0 and out.read_text().count("\n") > 1 and not list(tmp_path.glob(".samples.jsonl.tmp-*"))


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 64 KiB tmpfs (root only: mount), full after a few writes."""
    import subprocess

    mount = tmp_path / "full"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.integration
def test_merge_and_export_on_a_full_disk_are_one_line(finished, full_disk: Path) -> None:
    from tests.conftest import selfloop_cli

    config, url = finished
    out = selfloop_cli("merge", "tiny", "--iteration", "1", "--out", str(full_disk / "merged"), "--config", str(config))
    assert out.returncode == 1 and "no space left on device" in out.stderr, out.stderr[-2000:]
    assert "unexpected error" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not any(full_disk.iterdir()), "nothing half-written is left"
    (full_disk / "filler").write_bytes(b"x" * 60_000)
    out = selfloop_cli("export", "tiny", "--what", "samples", "--out", str(full_disk / "s.jsonl"), "--db", url)
    assert out.returncode == 1 and "no space left on device" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


@pytest.mark.integration
def test_the_dashboard_answers_404_for_an_id_beyond_64_bits(finished) -> None:
    from starlette.testclient import TestClient

    from selfloop.ui.app import create_app

    _, url = finished
    client = TestClient(create_app(url), base_url="http://127.0.0.1:8765")
    for path in ("/prompts/99999999999999999999", "/loops/tiny/iterations/99999999999999999999",
                 "/loops/tiny/iterations/99999999999999999999/evals?suite=arithmetic"):
        assert client.get(path).status_code == 404, path
    assert client.get("/prompts/1").status_code == 200


@pytest.mark.integration
def test_track_to_an_mlflow_file_store_says_what_to_use(finished, tmp_path: Path, run_cli) -> None:
    """MLflow 3 refuses file stores: said at once, with the fix, not as "unexpected error" from MLflow."""
    from tests.conftest import tiny_yaml

    _, url = finished
    config = tiny_yaml(tmp_path, url, tracking={"mlflow": {"tracking_uri": f"file://{tmp_path / 'mlruns'}"}})
    code, _, err = run_cli("track", "tiny", "--to", "mlflow", "--config", str(config))
    assert code == 2 and "is a file store, which MLflow 3 refuses: use sqlite:///PATH/mlflow.db" in err, err
    assert "unexpected error" not in err and not (tmp_path / "mlruns").exists()


# -- paper cuts of the user trial (issue 32, item 6) ------------------------------------------------------
def test_db_takes_a_plain_path_as_an_sqlite_store(tmp_path: Path, run_cli, monkeypatch) -> None:
    open_database(f"sqlite:///{tmp_path / 'store.db'}", init=True).dispose()
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("status", "--db", "store.db")
    assert code == 0 and "no process is running a loop" in out, err
    code, _, err = run_cli("sql", "--db", str(tmp_path / "store.db"), "SELECT count(*) FROM loops")
    assert code == 0, err


def test_a_mistyped_key_gets_a_suggestion(tmp_path: Path, run_cli) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("loop: {name: a, seeed: 1}\ntrian: {}\neval: {suites: [{name: s, kind: arithmetic, szie: 3}]}\n")
    code, _, err = run_cli("config", "validate", str(path))
    assert code == 2
    for line in ("loop.seeed: unknown key (value 1); did you mean 'seed'?", "trian: unknown key (value {}); did you mean 'train'?",
                 "eval.suites.0.szie: unknown key (value 3); did you mean 'size'?"):
        assert line in err, err
    path.write_text("loop: {name: a, zzzz: 1}\n")
    assert "did you mean" not in run_cli("config", "validate", str(path))[2]


@pytest.mark.integration
def test_exporting_what_a_loop_does_not_have_says_what_it_has(finished, tmp_path: Path, run_cli) -> None:
    """The tiny loop trains RLSC on rewarded examples: no pairs. An empty file would fail later, in load_dataset."""
    _, url = finished
    out = tmp_path / "pairs.jsonl"
    code, _, err = run_cli("export", "tiny", "--what", "pairs", "--out", str(out), "--db", url)
    assert code == 1 and "loop 'tiny' has no pairs (its algorithm, rlsc, trains on rewarded examples)" in err, err
    assert "use --what examples" in err and not out.exists()


def test_slow_clients_never_keep_a_health_probe_out(tmp_path: Path, sqlite_url: str, monkeypatch) -> None:
    """The trial: 40 clients trickling a byte every 4 s kept /metrics and /health down (10 of 10 probes over 40 s),
    which would have had systemd restart a healthy daemon. Here 40 clients trickle a byte every 0.5 s (the socket
    timeout never fires) while 10 probes come in: each is answered, and no trickler holds its slot past the
    request deadline."""
    import socket
    import threading
    import time

    import httpx

    from selfloop import metrics_http
    from tests.conftest import make_config

    monkeypatch.setattr(metrics_http, "REQUEST_DEADLINE_S", 2.0)
    open_database(sqlite_url, init=True).dispose()
    config = make_config(tmp_path, sqlite_url, metrics={"enabled": True, "port": 0})
    server = metrics_http.MetricsServer(config).start()
    port = server.httpd.server_address[1]
    stop = threading.Event()
    dropped = []

    def trickle() -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        started = time.monotonic()
        try:
            for byte in b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000:
                if stop.is_set():
                    return
                sock.sendall(bytes([byte]))
                time.sleep(0.5)
        except OSError:
            dropped.append(time.monotonic() - started)  # the server closed it
        finally:
            sock.close()

    slow = [threading.Thread(target=trickle, daemon=True) for _ in range(40)]
    try:
        for thread in slow:
            thread.start()
        time.sleep(1.0)
        answered = []
        for _ in range(10):
            started = time.monotonic()
            reply = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
            answered.append((reply.status_code, time.monotonic() - started))
            time.sleep(0.5)
        assert all(code == 200 and took < 3 for code, took in answered), answered
        time.sleep(3.0)
        assert len(dropped) >= 32 and max(dropped) < 2.0 + 1.5, dropped  # nobody kept a slot past the deadline
    finally:
        stop.set()
        server.stop()


# -- reports: hostile names, malformed lines, planted links, a full disk ----------------------------------------
def _hostile_lab(tmp_path: Path, lines: list) -> Path:
    import json

    import yaml

    lab = tmp_path / "lab.yaml"
    lab.write_text(yaml.safe_dump({"name": "t", "config": "base.yaml", "seeds": [0],
                                   "arms": {"control": {}, "ttrl": {}}}))
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "t.jsonl").write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return lab


def _result(arm: str, suite: str = "s") -> dict:
    return {"lab": "t", "arm": arm, "seed": 0, "promoted": 1, "phase_seconds": {"train": 1.0}, "run_seconds": 1.0,
            "suites": {suite: {"split": "test", "start": "0000", "final": "1100", "curve": [0.5]}}}


def test_lab_report_puts_no_name_raw_inside_its_script(tmp_path: Path, run_cli) -> None:
    """An arm or suite named `</script><script>alert(1)` ended the report's script element and ran when opened."""
    evil = "</script><script>alert(1)</script>"
    lab = _hostile_lab(tmp_path, [_result("control", evil), _result(evil, evil)])
    code, _, err = run_cli("lab", "report", str(lab), "--out", str(tmp_path / "out"))
    assert code == 0, err
    page = (tmp_path / "out" / "index.html").read_text()
    assert evil not in page and "<script>alert" not in page
    assert page.count("<script") == page.count("</script>") == 2  # plotly's and the report's own, nothing more


@pytest.mark.parametrize(("line", "message"), [
    ('{"lab": "t", "arm": "ttrl"}', r"t.jsonl:2: seed: Field required"),
    ('{"lab": "t", "arm": "ttrl", "seed": "zero", "suites": {}}', r"t.jsonl:2: seed: "),
    ('{"lab": "t", "arm": "ttrl", "seed": 0, "suites": {"s": {"start": "01", "final": "012"}}}', r"t.jsonl:2: suites.s.final"),
    ('[1, 2]', r"t.jsonl:2: a results line is a JSON object"),
    ('{"lab": "t", ', r"t.jsonl:2: not a JSON line"),
])
def test_a_malformed_results_line_is_one_line_naming_it(tmp_path: Path, run_cli, line: str, message: str) -> None:
    lab = _hostile_lab(tmp_path, [_result("control"), line])
    for args in (["report", str(lab)], ["report", str(lab), "--json"]):
        code, _, err = run_cli("lab", *args)
        assert code == 1 and re.search(message, err) and len(err.strip().splitlines()) == 1, (args, err)
        assert "unexpected error" not in err


def test_reports_never_write_through_a_link_planted_in_their_folder(tmp_path: Path, run_cli, sqlite_url: str) -> None:
    lab = _hostile_lab(tmp_path, [_result("control"), _result("ttrl")])
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").symlink_to(victim)
    code, _, err = run_cli("lab", "report", str(lab), "--out", str(out))
    assert code == 1 and "index.html there is a symbolic link" in err, err
    assert victim.read_text() == "keep me" and sorted(p.name for p in out.iterdir()) == ["index.html"]
    (tmp_path / "linked").symlink_to(out)
    code, _, err = run_cli("lab", "report", str(lab), "--out", str(tmp_path / "linked"))
    assert code == 1 and "a symbolic link" in err
    # `selfloop report` of a loop: the same rule.
    from tests.test_ui import build_store

    build_store(sqlite_url)
    loop_out = tmp_path / "loop-report"
    loop_out.mkdir()
    (loop_out / "style.css").symlink_to(victim)
    code, _, err = run_cli("report", "a", "--db", sqlite_url, "--out", str(loop_out))
    assert code == 1 and "style.css there is a symbolic link" in err and victim.read_text() == "keep me", err


@pytest.mark.integration
def test_a_report_on_a_full_disk_names_its_folder_and_leaves_nothing(full_disk: Path, run_cli, sqlite_url: str) -> None:
    """It named the package's plotly.min.js as the file being written and left a partial folder."""
    from tests.test_ui import build_store

    build_store(sqlite_url)
    code, _, err = run_cli("report", "a", "--db", sqlite_url, "--out", str(full_disk / "report"))
    assert code == 1 and f"no space left on device writing the report to {full_disk / 'report'}" in err, err
    assert "plotly" not in err and len(err.strip().splitlines()) == 1
    assert not any(full_disk.iterdir()), "nothing half-written is left"


@pytest.mark.integration
def test_a_store_on_a_read_only_filesystem_can_be_read(tmp_path: Path) -> None:
    """Needs root (a read-only bind mount); skipped elsewhere. SQLite's WAL needs a `-shm` file it can create, so
    `sql`, `status`, `history` and the Python API failed with "unable to open database file"; such a store is
    opened immutable (nothing can change it while it is read-only)."""
    import subprocess
    import sys

    from tests.test_ui import build_store

    (tmp_path / "rw").mkdir()
    build_store(f"sqlite:///{tmp_path / 'rw' / 'selfloop.db'}")
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "--bind", str(tmp_path / "rw"), str(ro)], capture_output=True).returncode:
        pytest.skip("a read-only bind mount needs root")
    try:
        assert subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True).returncode == 0
        url = f"sqlite:///{ro / 'selfloop.db'}"
        for args in (["status", "--db", url], ["history", "--loop", "a", "--db", url],
                     ["sql", "--db", url, "SELECT count(*) AS n FROM iterations"]):
            out = subprocess.run([sys.executable, "-m", "selfloop", *args], capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, (args, out.stderr[-2000:])
        assert "5" in out.stdout
        api = subprocess.run([sys.executable, "-c", f"import selfloop; print(len(selfloop.open_store({url!r}).loops()))"],
                             capture_output=True, text=True, timeout=300)
        assert api.returncode == 0 and api.stdout.strip() == "2", api.stderr[-2000:]
    finally:
        subprocess.run(["umount", str(ro)], check=False)

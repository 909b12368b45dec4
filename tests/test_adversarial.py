"""What an adversarial trial broke (issue 28), each case as it was tried: a second writer through a
hard link, readers that could signal or hold a writer's lock, reads and exports that were not bounded or
not atomic, and failures that ended in "unexpected error"."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from selfloop.db.engine import open_database
from selfloop.errors import LockedError, SelfloopError
from selfloop.lock import LoopLock, lock_file


# -- a second writer through a hard link -----------------------------------------------------------------
def test_a_database_with_a_second_hard_link_is_refused_to_writers(tmp_path: Path, run_cli) -> None:  # noqa: ANN001
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
    """Two names of one directory (a bind mount shows the same inode) reach one lock; the name of the file
    does not enter into it."""
    (tmp_path / "real").mkdir()
    db = open_database(f"sqlite:///{tmp_path / 'real' / 'selfloop.db'}", init=True)
    st = (tmp_path / "real" / "selfloop.db").stat()
    path = lock_file(tmp_path / "real" / "selfloop.db", "a")
    assert f"{st.st_dev:x}-{st.st_ino:x}" in path.name
    with LoopLock(db, "a"):
        other = open_database(f"sqlite:///{tmp_path / 'real' / '.' / 'selfloop.db'}")
        with pytest.raises(LockedError):
            LoopLock(other, "a").acquire()
        other.dispose()
    db.dispose()


# -- PostgreSQL readers ----------------------------------------------------------------------------------
def _psycopg(url: str, autocommit: bool = True):  # noqa: ANN202
    import psycopg
    from sqlalchemy.engine import make_url

    return psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
                           autocommit=autocommit)


@pytest.fixture
def reader_url(postgres_url: str) -> str:
    from selfloop.db.migrate import upgrade
    from selfloop.db.engine import make_engine
    from selfloop.db.readonly import create_reader

    engine = make_engine(postgres_url)
    upgrade(engine)
    engine.dispose()
    return create_reader(postgres_url, "selfloop_adv_reader")


@pytest.mark.postgres
@pytest.mark.parametrize("granted", ["pg_signal_backend", "selfloop_test"])
def test_a_reader_that_can_become_a_powerful_role_is_refused(reader_url: str, postgres_superuser_url: str,
                                                             granted: str) -> None:
    """create-reader makes NOINHERIT roles; a NOINHERIT member of pg_signal_backend (or of the writer role)
    has none of its rights until `set_config('role', ...)`, which any statement can call."""
    from selfloop.db.readonly import run_readonly
    from selfloop.errors import ReadOnlyViolation

    assert run_readonly(reader_url, "SELECT 1").rows == [(1,)]
    with _psycopg(postgres_superuser_url) as su:
        su.execute(f"GRANT {granted} TO selfloop_adv_reader")
    try:
        with pytest.raises(ReadOnlyViolation, match=f"(member of {granted}|can become role {granted}|is \\(or is a member of\\) a superuser)"):
            run_readonly(reader_url, "SELECT set_config('role', 'pg_signal_backend', true), pg_terminate_backend(pg_backend_pid())")
    finally:
        with _psycopg(postgres_superuser_url) as su:
            su.execute(f"REVOKE {granted} FROM selfloop_adv_reader")


@pytest.mark.postgres
def test_a_reader_holding_the_loops_lock_key_cannot_keep_a_writer_out(postgres_url: str, reader_url: str) -> None:
    from selfloop.lock import ADVISORY_CLASS, _int4

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

"""Database engines: SQLite (embedded default, WAL) and PostgreSQL (by URL), and the schema check.

SQLite connections get WAL, a busy timeout and foreign keys; the writer's transactions begin
IMMEDIATE so two writers queue on the lock instead of failing halfway through a transaction.
A new SQLite file and its directory are created owner-only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from selfloop.credentials import remember
from selfloop.errors import SchemaError, SelfloopError
from selfloop.private import private_dir

if TYPE_CHECKING:
    from sqlalchemy import Connection

SUPPORTED = "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB"


def check_url(url: str) -> URL:
    """Parse a database URL; raise ValueError (named by the config field) when unusable. Its password, if any, is
    remembered so that no log line or error shows it (`selfloop.credentials`)."""
    remember(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"not a database URL (expected {SUPPORTED})") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError("an SQLite URL needs a file path: sqlite:///PATH")
    elif backend == "postgresql":
        if parsed.get_driver_name() not in ("psycopg", "psycopg2"):
            raise ValueError(f"PostgreSQL driver {parsed.get_driver_name()!r} is not supported; use postgresql+psycopg://")
        if not parsed.database:
            raise ValueError("a PostgreSQL URL needs a database name")
    else:
        raise ValueError(f"database {backend!r} is not supported (expected {SUPPORTED})")
    return parsed


def same_database(a: str, b: str) -> bool:
    """Whether two URLs reach the same database: one SQLite file (by its real path), or one PostgreSQL database
    (host, port and name, whatever the driver, user or password)."""
    try:
        x, y = make_url(a), make_url(b)
    except ArgumentError:
        return False
    if x.get_backend_name() != y.get_backend_name():
        return False
    if x.get_backend_name() == "sqlite":
        return x.database is not None and y.database is not None and bool(x.database and y.database) \
            and os.path.realpath(x.database) == os.path.realpath(y.database)
    return ((x.host or "localhost"), x.port or 5432, x.database) == ((y.host or "localhost"), y.port or 5432, y.database)


def as_url(text: str) -> str:
    """A store as a user names it: a URL as given, a plain file path as the SQLite URL of its absolute path."""
    return text if "://" in text or not text.strip() else f"sqlite:///{Path(text).expanduser().resolve()}"


def normalise_url(url: str) -> URL:
    parsed = check_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, not the psycopg2 default
    return parsed


def sqlite_path(url: URL | str) -> Path | None:
    parsed = make_url(url) if isinstance(url, str) else url
    return Path(parsed.database) if parsed.get_backend_name() == "sqlite" and parsed.database is not None else None


def unchanging(path: Path) -> bool:
    """Whether the SQLite file at `path` can only be read as it is: on a read-only filesystem, or in a directory
    this user cannot write with no shared-memory file beside it (no writer has it open). SQLite's WAL needs a
    `-shm` file it can create, so such a store is opened `immutable` (nothing can change it under the reader)."""
    try:
        if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    return not os.access(path.parent, os.W_OK) and not Path(f"{path}-shm").exists()


def read_only_uri(path: Path) -> str:
    """The URI that opens `path` for reading only (immutable when `unchanging`)."""
    from urllib.parse import quote

    return f"file:{quote(str(path))}?mode=ro" + ("&immutable=1" if unchanging(path) else "")


def check_single_link(path: Path) -> None:
    """Refuse an SQLite file with more than one hard link: each name gets its own WAL file and lock, so two
    writers through two names corrupt it (SQLite's "How to corrupt" page, section 2.5)."""
    try:
        links = os.stat(path).st_nlink
    except FileNotFoundError:
        return
    if links > 1:
        raise SelfloopError(f"{path} has {links} hard links: SQLite keeps a WAL and a lock per name, so a second "
                            "name lets two writers corrupt it. Remove the other links (find / -samefile PATH) "
                            "and use one path")


def _create_private_file(path: Path) -> None:
    private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


def make_engine(url: str, *, busy_timeout_ms: int = 30000, deferred: bool = False, create: bool = False) -> Engine:
    """An engine for `url`. deferred (SQLite): transactions begin deferred, not IMMEDIATE, and the journal pragmas
    are left as they are, so a reader (status, history) never queues behind the writer. It does not stop writes:
    a connection that cannot write is `selfloop.db.reader_engine`'s.

    create: make a missing SQLite file (owner-only); otherwise a missing file is an error.
    """
    parsed = normalise_url(url)
    path = sqlite_path(parsed)
    if path is not None:
        if not path.exists():
            if not create:
                raise SelfloopError(f"no database at {path}: point at the loop's store with --db URL, --config FILE "
                                    "(its database.url or loop.state_dir) or $SELFLOOP_DB; a new store is made by "
                                    "`selfloop run` or `selfloop db upgrade --db URL`")
            _create_private_file(path)
        if not deferred:
            check_single_link(path)
            from selfloop.db.file_locks import claim_name

            claim_name(path)
        if deferred and unchanging(path):  # a reader of a store on read-only media (or a folder it cannot write)
            import sqlite3

            uri = read_only_uri(path)
            engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(
                uri, uri=True, timeout=busy_timeout_ms / 1000, check_same_thread=False))
        else:
            engine = create_engine(parsed, connect_args={"timeout": busy_timeout_ms / 1000})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event below issues BEGIN
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cur.execute("PRAGMA foreign_keys = ON")
            if not deferred:
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute("PRAGMA synchronous = NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")

        return engine
    return create_engine(parsed, pool_pre_ping=True)


@dataclass
class Database:
    """An engine and its session factory; `session()` commits on success, rolls back on error.

    fence: set by the writer lock (`selfloop.lock.LoopLock`); called inside every transaction just
    before it commits, it raises when this process no longer holds its loop, so nothing is committed.
    """

    url: str
    engine: Engine
    fence: Callable[[Session], None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._factory() as session, session.begin():
            yield session
            if self.fence is not None:
                session.flush()
                self.fence(session)

    def dispose(self) -> None:
        self.engine.dispose()


def schema_revision(engine: Engine) -> tuple[str | None, bool]:
    """(alembic revision of the database or None, whether it has any table at all)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        tables = inspect(conn).get_table_names()
        revision = MigrationContext.configure(conn).get_current_revision()
    return revision, bool(tables)


def open_database(url: str, *, busy_timeout_ms: int = 30000, deferred: bool = False, init: bool = False) -> Database:
    """Open a database whose schema is at this code's head revision.

    init: a brand-new database (no tables) is brought to head; one with an older schema is
    always refused with the command that upgrades it.
    """
    from selfloop.db.migrate import head_revision, init_schema

    engine = make_engine(url, busy_timeout_ms=busy_timeout_ms, deferred=deferred, create=init)
    try:
        revision, has_tables = schema_revision(engine)
    except Exception as exc:
        engine.dispose()
        raise SelfloopError(f"cannot open database {safe_url(url)}: {exc.__class__.__name__}: {exc}".splitlines()[0]) from exc
    if revision == head_revision():
        return Database(url, engine)
    if revision is None and init and init_schema(engine):  # the check is repeated under the schema lock
        return Database(url, engine)
    engine.dispose()
    raise schema_error(url, revision)


def refuse_schema(url: str, revision: str | None) -> None:
    """Raise the SchemaError that says how to bring `url`'s schema to this code's head (if it is not there)."""
    from selfloop.db.migrate import head_revision

    if revision != head_revision():
        raise schema_error(url, revision)


def schema_error(url: str, revision: str | None) -> SchemaError:
    """What a schema not at this code's head (`revision`) needs, as the error to raise."""
    from selfloop.db.migrate import head_revision, known_revisions

    head = head_revision()
    if revision is None:
        return SchemaError(f"database {safe_url(url)} has no selfloop schema: run `selfloop db upgrade --db {safe_url(url)}`")
    if revision not in known_revisions():
        return SchemaError(
            f"database {safe_url(url)} has schema revision {revision}, newer than this selfloop knows (head {head}): upgrade selfloop"
        )
    return SchemaError(
        f"database {safe_url(url)} has schema revision {revision}, older than this selfloop's {head}: "
        f"run `selfloop db upgrade --db {safe_url(url)}`"
    )


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url

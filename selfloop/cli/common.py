"""What the command modules share: finding the store from --db or --config, the loop's config, logging, running a loop in the foreground."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from selfloop.errors import SelfloopError

if TYPE_CHECKING:
    from selfloop.config import Config
    from selfloop.db.engine import Database


def add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL", help="database URL (sqlite:///PATH or postgresql+psycopg://...), or an SQLite file's path")
    p.add_argument("--config", type=Path, metavar="FILE", help="take the database (and state dir) from this config")


def checked_db(url: str) -> str:
    """--db as given: a URL, or a plain file path taken as an SQLite store."""
    from selfloop.db.engine import as_url, check_url

    url = as_url(url)
    try:
        check_url(url)
    except ValueError as exc:
        raise SelfloopError(f"--db {url!r}: {exc}") from None
    return url


def database_url(args: argparse.Namespace) -> str:
    """--db, else --config's database, else $SELFLOOP_DB, else <state_dir>/selfloop.db."""
    if args.db:
        return checked_db(args.db)
    if getattr(args, "config", None):
        from selfloop.config import load_config

        return load_config(args.config).database_url()
    from selfloop.api import store_url

    return store_url(None)  # $SELFLOOP_DB, else the default store: as the Python API finds it


def with_db(config: Config, url: str | None) -> Config:
    if url:
        config.database.url = checked_db(url)
    return config


def loop_logging(args: argparse.Namespace, config: Config) -> None:
    from selfloop.log import setup_logging

    lc = config.logging
    setup_logging("DEBUG" if args.debug else lc.level, json_lines=args.log_json or lc.json_lines,
                  file=lc.file, rotation=lc.rotation, retention=lc.retention)


def check_iterations(n: int | None) -> None:
    if n is not None and n < 1:
        raise SelfloopError(f"--iterations {n}: must be at least 1")


def config_of(path: Path, loop: str, overrides: list[str] | None = None) -> Config:
    """The config FILE of LOOP: --config means the loop's config file on every command (a file that configures
    another loop is refused rather than half used)."""
    from selfloop.config import load_config

    config = load_config(path, overrides)
    if config.loop.name != loop:
        raise SelfloopError(f"--config {path} configures loop {config.loop.name!r}, not {loop!r}")
    return config


def run_foreground(config: Config, iterations: int | None) -> int:
    from selfloop.runner import run_loop
    from selfloop.signals import StopFlag

    outcomes = run_loop(config, iterations, StopFlag().install())
    print(f"loop {config.loop.name}: ran {len(outcomes)} iteration(s)" + (f", last {outcomes[-1].iteration}" if outcomes else ""))
    return 0


def loop_snapshot(db: Database, name: str, url: str) -> dict:
    """The config snapshot a loop was created with; resume and fork start from it."""
    from selfloop.db import queries
    from selfloop.db.engine import safe_url

    with db.session() as session:
        loop = queries.loop_by_name(session, name)
        if loop is None:
            raise SelfloopError(queries.no_loop(session, name, f" in {safe_url(url)}"))
        return loop.config  # a mapping: resume and fork apply --set to it before validating


def unpause(url: str, name: str) -> None:
    from selfloop.db import queries
    from selfloop.db.engine import open_database

    db = open_database(url)
    try:
        with db.session() as session:
            loop = queries.loop_named(session, name)
            if loop.status == "paused":
                loop.status, loop.status_reason = "ready", None
                queries.add_event(session, loop.id, None, "loop.unpaused", f"loop {name} unpaused by the user")
    finally:
        db.dispose()


def loop_config(args: argparse.Namespace, db: Database, name: str, url: str) -> Config:
    """Where a loop's files are: --config's settings, else the loop's stored config (its state directory),
    with the database in use."""
    from selfloop.config import load_config, stored_config

    if args.config:
        config = load_config(args.config)
    else:
        config = stored_config(loop_snapshot(db, name, url), name)
    return with_db(config, url)

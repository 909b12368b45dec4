"""`selfloop ui`: the read-only dashboard."""

from __future__ import annotations

import argparse
import os

from selfloop.cli.common import add_db, checked_db, database_url
from selfloop.errors import SelfloopError


def add(sub: argparse._SubParsersAction) -> None:
    """Add `ui` to the parser."""
    p = sub.add_parser(
        "ui", help="a read-only web dashboard: loops, lineage, live progress, curves, samples and judgments",
        description="Serve a read-only dashboard over the store: every loop with live progress and lineage, a loop's "
        "curves (held-out metrics with confidence bands and promote decisions, loss, judge score, vote share, length), "
        "its events, two loops compared, and for each iteration its prompts, samples, judgments, votes, training "
        "examples and held-out answers. It reads through connections that cannot write (SQLite: opened read-only; "
        "PostgreSQL: the read-only role of `selfloop db create-reader`, given by --db or database.reader_url) and "
        "refuses any request but GET. It binds to 127.0.0.1; reach it from elsewhere through an SSH tunnel "
        "(ssh -L 8765:127.0.0.1:8765 HOST), or bind another address with a token in $SELFLOOP_UI_TOKEN.")
    add_db(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other needs $SELFLOOP_UI_TOKEN)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")


def cmd_ui(args: argparse.Namespace) -> int:
    from selfloop.config import Config, LoopConfig, load_config
    from selfloop.ui.app import TOKEN_ENV, serve

    if not 1 <= args.port <= 65535:
        raise SelfloopError(f"--port {args.port}: must be from 1 to 65535")
    config = load_config(args.config) if args.config else Config(loop=LoopConfig(name="default"))
    url = checked_db(args.db) if args.db else config.reader_url() if args.config else database_url(args)
    serve(url, args.host, args.port, token=os.environ.get(TOKEN_ENV) or None,
          statement_timeout_ms=config.database.statement_timeout_ms)
    return 0


COMMANDS = {"ui": cmd_ui}

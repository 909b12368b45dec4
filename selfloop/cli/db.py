"""`selfloop db` (schema upgrade, downgrade, current revision, PostgreSQL reader roles) and `selfloop sql` (one read-only statement)."""

from __future__ import annotations

import argparse
import sys

from selfloop.cli.common import add_db, database_url
from selfloop.render import FORMATS


def add(sub: argparse._SubParsersAction) -> None:
    """Add `db`, `sql` to the parser."""
    db = sub.add_parser("db", help="database schema: upgrade, downgrade, current revision")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    p = db_sub.add_parser("upgrade", help="create or migrate the schema to this version's head")
    add_db(p)
    p.add_argument("--revision", default="head", help="target revision (default: head)")
    p = db_sub.add_parser("downgrade", help="migrate the schema down to REVISION ('base' drops everything)")
    add_db(p)
    p.add_argument("revision")
    p = db_sub.add_parser("current", help="print the database's schema revision and this version's head")
    add_db(p)
    p = db_sub.add_parser(
        "create-reader",
        help="PostgreSQL: create (or reset) a role that can only read, and print its URL for `selfloop sql`",
        description="Create or reset a PostgreSQL login role with SELECT on selfloop's tables and views and nothing "
        "else, read-only transactions and a statement timeout, and print its URL. Give that URL to `selfloop sql --db` "
        "or set it as database.reader_url. Run it as the role that owns the schema (it needs CREATEROLE); running it "
        "again gives the role a new password.",
    )
    add_db(p)
    p.add_argument("--role", default="selfloop_reader", help="the reader role's name (default: selfloop_reader)")

    p = sub.add_parser(
        "sql", help="run one read-only SQL statement and print the rows",
        description="Run one statement on a connection that cannot write: SQLite is opened read-only with an "
        "authorizer; PostgreSQL needs the read-only role of `selfloop db create-reader` (--db, or database.reader_url "
        "with --config). The statement has a time limit (database.statement_timeout_ms).",
    )
    add_db(p)
    p.add_argument("--format", choices=FORMATS, default="table", help="table, csv, json (an array) or jsonl (a line a row)")
    p.add_argument("--wide", action="store_true", help="table: do not cut long cells")
    p.add_argument("--max-rows", type=int, default=None,
                   help="print at most this many rows (default 10000, at most 1000000)")
    p.add_argument("query", help='one statement, e.g. "SELECT * FROM iteration_summary"')


def cmd_db(args: argparse.Namespace) -> int:
    from selfloop.db.engine import make_engine, schema_revision
    from selfloop.db.migrate import downgrade, head_revision, upgrade

    url = database_url(args)
    if args.db_command == "create-reader":
        from selfloop.db.create_reader import create_reader

        print(create_reader(url, args.role))
        return 0
    engine = make_engine(url, create=args.db_command == "upgrade")
    try:
        if args.db_command == "upgrade":
            upgrade(engine, args.revision)
        elif args.db_command == "downgrade":
            downgrade(engine, args.revision)
        revision, _ = schema_revision(engine)
        print(f"schema revision: {revision or 'none'} (this selfloop's head: {head_revision()})")
    finally:
        engine.dispose()
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from selfloop.config import Config, LoopConfig, load_config
    from selfloop.db.user_sql import run_readonly
    from selfloop.render import render

    config = load_config(args.config) if args.config else Config(loop=LoopConfig(name="default"))
    # --db, else --config's reader URL (database.reader_url or its database), else $SELFLOOP_DB, else the default store.
    url = config.reader_url() if args.config and not args.db else database_url(args)
    result = run_readonly(url, args.query, max_rows=args.max_rows, timeout_ms=config.database.statement_timeout_ms)
    print(render(result.columns, result.rows, args.format, wide=args.wide))
    if result.cut_by_size:
        from selfloop.db.user_sql import MAX_RESULT_BYTES

        print(f"selfloop: only the first {len(result.rows)} rows are shown: they hold about {MAX_RESULT_BYTES >> 20} MiB, "
              "the most one result keeps (select fewer or shorter columns, or use LIMIT/OFFSET)", file=sys.stderr)
    elif result.truncated:
        print(f"selfloop: only the first {len(result.rows)} rows are shown (--max-rows N for more)", file=sys.stderr)
    return 0


COMMANDS = {"db": cmd_db, "sql": cmd_sql}

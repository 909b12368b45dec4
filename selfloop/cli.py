"""The `selfloop` command. Thin: parses arguments, calls into the package, prints results.

Every error a user can fix is one line on stderr (`--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from selfloop import __version__
from selfloop.errors import ConfigError, SelfloopError
from selfloop.render import FORMATS

if TYPE_CHECKING:
    from selfloop.config import Config
    from selfloop.db.engine import Database

DESCRIPTION = """\
selfloop makes a language model improve itself: each iteration synthesises prompts, samples
N completions, judges them with the model itself (LLM judge, majority vote, confidence),
trains a LoRA adapter by one of its {count} algorithms, evaluates it on held-out verifiable
suites and promotes it only if it is not worse. Everything lands in SQL.
Algorithms (train.algorithm): {algorithms}.

Database: --db URL, else the config's database.url, else <state_dir>/selfloop.db
(state_dir: $SELFLOOP_STATE_DIR, systemd's $STATE_DIRECTORY, or ~/.local/share/selfloop)."""

EPILOG = """\
examples:
  selfloop run --config configs/demo-cpu.yaml
  selfloop history --loop demo-cpu
  selfloop sql "SELECT iteration, main_metric, promoted FROM iteration_summary"
  selfloop fork demo-cpu --at 2 --name demo-lr2 --set train.learning_rate=2e-4
  selfloop daemon --config /etc/selfloop/loop.yaml     (see systemd/selfloop.service)"""


def _description() -> str:
    """DESCRIPTION with the algorithms the registry holds (built-ins and installed plug-ins), wrapped."""
    from selfloop.algorithms import specs

    names = list(specs())
    listed = textwrap.fill(", ".join(names), width=92, initial_indent=" " * 30, subsequent_indent="  ").strip()
    return DESCRIPTION.format(count=len(names), algorithms=listed)


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL", help="database URL (sqlite:///PATH or postgresql+psycopg://...), or an SQLite file's path")
    p.add_argument("--config", type=Path, metavar="FILE", help="take the database (and state dir) from this config")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfloop", description=_description(), epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"selfloop {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--log-json", action="store_true", help="log JSON lines instead of text")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    cfg = sub.add_parser("config", help="validate or show a config file")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    p = cfg_sub.add_parser("validate", help="exit 0 if FILE is valid; otherwise name each bad field and value")
    p.add_argument("file", type=Path)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field (repeatable)")
    p = cfg_sub.add_parser("show", help="print the effective config, defaults filled in")
    p.add_argument("file", type=Path)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field (repeatable)")
    cfg_sub.add_parser("reference", help="print the config reference (markdown) generated from the models")

    db = sub.add_parser("db", help="database schema: upgrade, downgrade, current revision")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    p = db_sub.add_parser("upgrade", help="create or migrate the schema to this version's head")
    _add_db(p)
    p.add_argument("--revision", default="head", help="target revision (default: head)")
    p = db_sub.add_parser("downgrade", help="migrate the schema down to REVISION ('base' drops everything)")
    _add_db(p)
    p.add_argument("revision")
    p = db_sub.add_parser("current", help="print the database's schema revision and this version's head")
    _add_db(p)
    p = db_sub.add_parser(
        "create-reader",
        help="PostgreSQL: create (or reset) a role that can only read, and print its URL for `selfloop sql`",
        description="Create or reset a PostgreSQL login role with SELECT on selfloop's tables and views and nothing "
        "else, read-only transactions and a statement timeout, and print its URL. Give that URL to `selfloop sql --db` "
        "or set it as database.reader_url. Run it as the role that owns the schema (it needs CREATEROLE); running it "
        "again gives the role a new password.",
    )
    _add_db(p)
    p.add_argument("--role", default="selfloop_reader", help="the reader role's name (default: selfloop_reader)")

    p = sub.add_parser(
        "sql", help="run one read-only SQL statement and print the rows",
        description="Run one statement on a connection that cannot write: SQLite is opened read-only with an "
        "authorizer; PostgreSQL needs the read-only role of `selfloop db create-reader` (--db, or database.reader_url "
        "with --config). The statement has a time limit (database.statement_timeout_ms).",
    )
    _add_db(p)
    p.add_argument("--format", choices=FORMATS, default="table", help="table, csv, json (an array) or jsonl (a line a row)")
    p.add_argument("--wide", action="store_true", help="table: do not cut long cells")
    p.add_argument("--max-rows", type=int, default=None,
                   help="print at most this many rows (default 10000, at most 1000000)")
    p.add_argument("query", help='one statement, e.g. "SELECT * FROM iteration_summary"')

    p = sub.add_parser("run", help="create or continue the config's loop in the foreground")
    p.add_argument("--config", type=Path, metavar="FILE", required=True)
    p.add_argument("--db", metavar="URL", help="database URL (overrides the config's database.url)")
    p.add_argument("--iterations", type=int, metavar="N", help="run at most N iterations now (default: until the loop ends)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (repeatable)")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus /metrics and /health on metrics.host (127.0.0.1) at PORT while running")

    p = sub.add_parser("resume", help="continue an interrupted or forked loop with its stored config")
    p.add_argument("loop", metavar="LOOP")
    p.add_argument("--db", metavar="URL", help="database URL")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="the loop's config file, as `run` takes it: its database, and what may change between runs "
                        "(limits, schedule, trackers, logging, metrics); a change of what the loop computes is refused. "
                        "Without it, the stored config")
    p.add_argument("--iterations", type=int, metavar="N", help="run at most N iterations now")
    p.add_argument("--unpause", action="store_true", help="continue a loop the promotion gate paused")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the stored config (speed, schedule, limits; a change of what the loop "
                        "computes is refused: fork instead)")

    p = sub.add_parser("fork", help="start a new loop from a stored checkpoint of another loop")
    p.add_argument("loop", metavar="LOOP", help="the loop to fork from")
    p.add_argument("--at", type=int, required=True, metavar="ITERATION", help="the iteration whose checkpoint starts the fork")
    p.add_argument("--name", required=True, metavar="NEW", help="the new loop's name")
    p.add_argument("--config", type=Path, metavar="FILE", help="the fork's config (default: the parent's stored config)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (repeatable)")
    p.add_argument("--db", metavar="URL", help="database URL")

    p = sub.add_parser("status", help="each loop's state, iteration, phase and progress, every process running a loop, "
                       "and what its vLLM servers hold")
    _add_db(p)

    p = sub.add_parser("daemon", help="run the config's loop until stopped (systemd: see systemd/selfloop.service)")
    p.add_argument("--config", type=Path, metavar="FILE", required=True)
    p.add_argument("--db", metavar="URL", help="database URL (overrides the config's database.url)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (repeatable)")

    p = sub.add_parser(
        "ui", help="a read-only web dashboard: loops, lineage, live progress, curves, samples and judgments",
        description="Serve a read-only dashboard over the store: every loop with live progress and lineage, a loop's "
        "curves (held-out metrics with confidence bands and promote decisions, loss, judge score, vote share, length), "
        "its events, two loops compared, and for each iteration its prompts, samples, judgments, votes, training "
        "examples and held-out answers. It reads through connections that cannot write (SQLite: opened read-only; "
        "PostgreSQL: the read-only role of `selfloop db create-reader`, given by --db or database.reader_url) and "
        "refuses any request but GET. It binds to 127.0.0.1; reach it from elsewhere through an SSH tunnel "
        "(ssh -L 8765:127.0.0.1:8765 HOST), or bind another address with a token in $SELFLOOP_UI_TOKEN.")
    _add_db(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other needs $SELFLOOP_UI_TOKEN)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")

    p = sub.add_parser("report", help="write a loop's history as an HTML folder that opens offline (the dashboard's charts)")
    p.add_argument("loop", metavar="LOOP")
    p.add_argument("--out", type=Path, metavar="DIR", help="output directory (default: <state_dir>/reports/LOOP)")
    _add_db(p)

    p = sub.add_parser(
        "track", help="send a loop's stored history to MLflow or W&B (backfill, or catch up after an outage)",
        description="Send what the tracker has not received yet of LOOP's stored history: its config, every training "
        "step, each iteration's figures, its completions and its events. The tracker settings come from --config's "
        "tracking section (only that section, and its database, are used: one file may serve many loops), else the "
        "loop's stored config. Refused while a process runs the loop (that process tracks it itself).",
    )
    p.add_argument("loop", metavar="LOOP")
    p.add_argument("--to", required=True, choices=["mlflow", "wandb"], help="the tracker")
    _add_db(p)

    p = sub.add_parser("history", help="one row per iteration (the iteration_summary view), every held-out suite's "
                       "accuracy, and fork lineage")
    _add_db(p)
    p.add_argument("--loop", metavar="NAME", help="only this loop")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="table, csv, jsonl (the iterations) or json (iterations, held-out suites and lineage)")
    p.add_argument("--wide", action="store_true", help="table: do not cut long cells")
    p.add_argument("--columns", metavar="A,B,...", help="only these columns, in this order (e.g. loop,iteration,main_metric); "
                   "'all' for every column. The table shows the main figures by default; csv and json every column")

    p = sub.add_parser("export", help="write a loop's pairs, samples, examples, rankings or eval items (TRL's dataset forms)")
    p.add_argument("loop", metavar="LOOP")
    p.add_argument("--what", required=True, choices=["pairs", "samples", "examples", "ranked", "evals"],
                   help="pairs: prompt/chosen/rejected; samples and examples: prompt/completion; ranked: a list-wise "
                   "method's rankings as query/responses/scores (RRHF's form); evals: held-out items")
    p.add_argument("--iteration", type=int, metavar="N", help="only iteration N (default: all)")
    p.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
    p.add_argument("--out", type=Path, metavar="FILE", help="the file to write (default: JSON Lines on stdout)")
    _add_db(p)

    p = sub.add_parser("merge", help="save the base model with a checkpoint's adapter merged in (a plain model)")
    p.add_argument("loop", metavar="LOOP")
    p.add_argument("--iteration", type=int, metavar="N", help="iteration N's checkpoint (default: the loop's current policy)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    _add_db(p)

    lp = sub.add_parser("loop", help="remove or rename a loop")
    loop_sub = lp.add_subparsers(dest="loop_command", metavar="ACTION", required=True)
    p = loop_sub.add_parser("rm", help="delete a loop: its rows and its checkpoint files (refused while it runs or "
                                       "while another loop starts from one of its checkpoints)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _add_db(p)
    p = loop_sub.add_parser("rename", help="rename a loop and move its checkpoints with it (refused while it runs)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("new", metavar="NEW")
    _add_db(p)

    lab = sub.add_parser("lab", help="run a lab file's arms x seeds as loops on one store and compare them "
                                     "(against its control and oracle arms, on the test splits)")
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    p = lab_sub.add_parser("run", help="run (or resume) every unfinished arm x seed to its end; each finished one "
                                       "appends a line (commit, date, machine, held-out rows) to the lab's results file")
    p.add_argument("file", type=Path, metavar="LAB", help="the lab file (YAML; see docs/lab.md)")
    p.add_argument("--only", action="append", metavar="ARM[/SEED]", help="run only these pieces (repeatable)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run N pieces at once, each in its own process (PostgreSQL stores, or SQLite on one machine)")
    p.add_argument("--checked", action="store_true", help=argparse.SUPPRESS)  # a --jobs worker: its parent checked the file
    p.add_argument("--allow-dirty", action="store_true",
                   help="run from a source tree with uncommitted changes (refused otherwise: a line must be reproducible "
                        "from its commit); the lines record the diff's sha256")
    p.add_argument("--archive", action="store_true",
                   help="after each piece, keep the lab's SQLite store compressed beside the results (stores/LAB.db.gz) "
                        "so the collapse monitors, promotions and gate replays can be checked")
    p = lab_sub.add_parser("report", help="compare the arms from the results file: gains over the control with "
                                          "paired 95%% intervals per seed, mean and spread, fraction of the oracle")
    p.add_argument("file", type=Path, metavar="LAB")
    p.add_argument("--out", type=Path, metavar="DIR", help="also write report.json, report.md and index.html (offline) here")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON instead of a table")
    p.add_argument("--update", type=Path, action="append", metavar="FILE",
                   help="rewrite this lab's generated blocks in FILE (between <!-- lab-report:NAME:full|readme:start --> "
                        "and its end marker), as docs/results.md and the README embed them (repeatable)")
    p = lab_sub.add_parser("status", help="each arm x seed: not started, running or stopped at iteration N, finished")
    p.add_argument("file", type=Path, metavar="LAB")
    p = lab_sub.add_parser("gates", help="re-take every stored promotion decision under stricter gate rules and read "
                                         "each one's outcome on the test splits: promoted candidates that lost, gains "
                                         "a rule would have rejected (single decisions; docs/lab.md)")
    p.add_argument("file", type=Path, metavar="LAB")
    p.add_argument("--json", action="store_true", help="print the replay as JSON")
    return parser


def _checked_db(url: str) -> str:
    """--db as given: a URL, or a plain file path taken as an SQLite store."""
    from selfloop.db.engine import as_url, check_url

    url = as_url(url)
    try:
        check_url(url)
    except ValueError as exc:
        raise SelfloopError(f"--db {url!r}: {exc}") from None
    return url


def _database_url(args: argparse.Namespace) -> str:
    """--db, else --config's database, else $SELFLOOP_DB, else <state_dir>/selfloop.db."""
    if args.db:
        return _checked_db(args.db)
    if getattr(args, "config", None):
        from selfloop.config import load_config

        return load_config(args.config).database_url()
    from selfloop.api import store_url

    return store_url(None)  # $SELFLOOP_DB, else the default store: as the Python API finds it


def cmd_config(args: argparse.Namespace) -> int:
    from selfloop.config import config_reference, load_config

    if args.config_command == "reference":
        print(config_reference(), end="")
        return 0
    config = load_config(args.file, getattr(args, "set", None))
    if args.config_command == "validate":
        from selfloop.inputs import check_engine, check_inputs

        check_inputs(config, this_machine=False)  # the task, eval and template files it names, line by line
        print(f"{args.file}: valid (loop {config.loop.name!r}, algorithm {config.train.algorithm})")
        try:  # a config for another machine (a GPU one) is valid; `run` refuses it here, before anything is written
            check_engine(config)
        except ConfigError as exc:
            print(f"selfloop: warning: {args.file} cannot run on this machine: {exc}", file=sys.stderr)
        return 0
    import yaml

    print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from selfloop.db.engine import make_engine, schema_revision
    from selfloop.db.migrate import downgrade, head_revision, upgrade

    url = _database_url(args)
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
    url = config.reader_url() if args.config and not args.db else _database_url(args)
    result = run_readonly(url, args.query, max_rows=args.max_rows, timeout_ms=config.database.statement_timeout_ms)
    print(render(result.columns, result.rows, args.format, wide=args.wide))
    if result.cut_by_size:
        from selfloop.db.user_sql import MAX_RESULT_BYTES

        print(f"selfloop: only the first {len(result.rows)} rows are shown: they hold about {MAX_RESULT_BYTES >> 20} MiB, "
              "the most one result keeps (select fewer or shorter columns, or use LIMIT/OFFSET)", file=sys.stderr)
    elif result.truncated:
        print(f"selfloop: only the first {len(result.rows)} rows are shown (--max-rows N for more)", file=sys.stderr)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    import json

    from selfloop.db import queries
    from selfloop.db.engine import open_database
    from selfloop.render import compact, render, select_columns

    db = open_database(_database_url(args), deferred=True)
    try:
        with db.session() as session:
            if args.loop and queries.loop_by_name(session, args.loop) is None:
                raise SelfloopError(queries.no_loop(session, args.loop, " in this database"))
            columns, rows = queries.iteration_summary(session, args.loop)
            scols, srows = queries.suite_results(session, args.loop)
            lcols, lrows = queries.lineage(session)
    finally:
        db.dispose()
    if args.loop:
        lrows = [r for r in lrows if r[0] == args.loop]
    if args.format == "table" and not args.columns:  # a terminal's width: the figures a user reads first
        columns, rows = compact(columns, rows, HISTORY_COLUMNS)
    else:
        columns, rows = select_columns(columns, rows, None if args.columns == "all" else args.columns)
    if args.format == "json":
        print(json.dumps({"iterations": json.loads(render(columns, rows, "json")), "suites": json.loads(render(scols, srows, "json")),
                          "lineage": json.loads(render(lcols, lrows, "json"))}, indent=2))
        return 0
    if args.format in ("csv", "jsonl"):
        print(render(columns, rows, args.format))
        return 0
    print(render(columns, rows, wide=args.wide))
    if srows and not args.columns:
        print("\nheld-out suites (the policy each iteration started from, and its candidate):")
        print(render(scols, srows, wide=args.wide))
    if lrows:
        print("\nlineage (forks):")
        print(render(lcols, lrows, wide=args.wide))
    return 0


def _with_db(config: Config, url: str | None) -> Config:
    if url:
        config.database.url = _checked_db(url)
    return config


def _setup_logging(args: argparse.Namespace, config: Config) -> None:
    from selfloop.log import setup_logging

    lc = config.logging
    setup_logging("DEBUG" if args.debug else lc.level, json_lines=args.log_json or lc.json_lines,
                  file=lc.file, rotation=lc.rotation, retention=lc.retention)


def _check_iterations(n: int | None) -> None:
    if n is not None and n < 1:
        raise SelfloopError(f"--iterations {n}: must be at least 1")


def cmd_run(args: argparse.Namespace) -> int:
    from selfloop.config import load_config

    _check_iterations(args.iterations)
    overrides = [*args.set, *(["metrics.enabled=true", f"metrics.port={args.metrics_port}"] if args.metrics_port is not None else [])]
    config = _with_db(load_config(args.config, overrides), args.db)
    _setup_logging(args, config)
    return _run_foreground(config, args.iterations)


def cmd_resume(args: argparse.Namespace) -> int:
    from selfloop.config import validate_config
    from selfloop.db.engine import open_database

    _check_iterations(args.iterations)
    url = _database_url(args)
    if args.config:  # the loop's own config file, as `run` takes it (what the loop computes may not change)
        config = _with_db(_config_of(args.config, args.loop, args.set), url)
    else:
        db = open_database(url, deferred=True)
        try:
            snapshot = _stored_config(db, args.loop, url)
        finally:
            db.dispose()
        from selfloop.config import apply_overrides

        snapshot = apply_overrides(snapshot, args.set)
        config = _with_db(validate_config(snapshot, source=f"loop {args.loop} (stored config)"), url)
    _setup_logging(args, config)
    if args.unpause:
        _unpause(url, args.loop)
    return _run_foreground(config, args.iterations)


def _config_of(path: Path, loop: str, overrides: list[str] | None = None) -> Config:
    """The config FILE of LOOP: --config means the loop's config file on every command (a file that configures
    another loop is refused rather than half used)."""
    from selfloop.config import load_config

    config = load_config(path, overrides)
    if config.loop.name != loop:
        raise SelfloopError(f"--config {path} configures loop {config.loop.name!r}, not {loop!r}")
    return config


def _run_foreground(config: Config, iterations: int | None) -> int:
    from selfloop.runner import run_loop
    from selfloop.signals import StopFlag

    outcomes = run_loop(config, iterations, StopFlag().install())
    print(f"loop {config.loop.name}: ran {len(outcomes)} iteration(s)" + (f", last {outcomes[-1].iteration}" if outcomes else ""))
    return 0


def _stored_config(db: Database, name: str, url: str) -> dict:
    """The config snapshot a loop was created with; resume and fork start from it."""
    from selfloop.db import queries
    from selfloop.db.engine import safe_url

    with db.session() as session:
        loop = queries.loop_by_name(session, name)
        if loop is None:
            raise SelfloopError(queries.no_loop(session, name, f" in {safe_url(url)}"))
        return loop.config  # a mapping: resume and fork apply --set to it before validating


def _unpause(url: str, name: str) -> None:
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


def cmd_fork(args: argparse.Namespace) -> int:
    from selfloop.config import read_config_file
    from selfloop.lineage import fork_loop

    data = read_config_file(args.config) if args.config else None
    name = fork_loop(_database_url(args), args.loop, args.at, args.name, data, args.set,
                     source=str(args.config) if args.config else None)
    print(f"loop {name} forked from {args.loop} iteration {args.at}; run it with: selfloop resume {name}"
          + (f" --db {args.db}" if args.db else ""))
    return 0


def _server_fleets(configs: list[tuple[str, dict]]) -> dict[tuple[str, ...], tuple[str | None, list[str]]]:
    """The vLLM server fleets that loops not yet finished generate on: servers -> (API key variable, loops)."""
    from selfloop.config import stored_config

    fleets: dict[tuple[str, ...], tuple[str | None, list[str]]] = {}
    for name, snapshot in configs:
        engine = stored_config(snapshot, name).engine
        if engine.kind == "vllm-server" and engine.servers:
            fleets.setdefault(tuple(engine.servers), (engine.api_key_env, []))[1].append(name)
    return fleets


def cmd_status(args: argparse.Namespace) -> int:
    from selfloop.db import queries
    from selfloop.db.engine import open_database
    from selfloop.render import render

    db = open_database(_database_url(args), deferred=True)
    try:
        with db.session() as session:
            columns, rows = queries.loop_status(session)
            writers = queries.loop_writers(session)
            unfinished = queries.unfinished_configs(session)
    finally:
        db.dispose()
    fleets = _server_fleets(unfinished)
    print(render(columns, rows))
    if fleets:
        from selfloop.engines.vllm_server import api_key_from_env, server_holdings

        for servers, (key_env, loops) in fleets.items():
            for url, holds in server_holdings(servers, api_key_from_env(key_env)):
                print(f"vllm server {url} (loops {', '.join(loops)}): {holds}")
    where = {row[0]: row for row in rows}
    for loop, kind, pid, host, since in writers:
        _, _, _, number, phase, progress, _, _ = where.get(loop, (None,) * 8)
        doing = f": iteration {number}, {phase} {progress or ''}".rstrip() if number is not None else ": between iterations"
        print(f"{kind}: loop {loop}, pid {pid} on {host}, since {since:%Y-%m-%d %H:%M:%S}{doing}")
    if not writers:
        print("no process is running a loop")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from selfloop.config import Config, LoopConfig, load_config
    from selfloop.ui.app import TOKEN_ENV, serve

    if not 1 <= args.port <= 65535:
        raise SelfloopError(f"--port {args.port}: must be from 1 to 65535")
    config = load_config(args.config) if args.config else Config(loop=LoopConfig(name="default"))
    url = _checked_db(args.db) if args.db else config.reader_url() if args.config else _database_url(args)
    serve(url, args.host, args.port, token=os.environ.get(TOKEN_ENV) or None,
          statement_timeout_ms=config.database.statement_timeout_ms)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from selfloop.config import Config, LoopConfig, load_config
    from selfloop.db.engine import open_database
    from selfloop.report import write_report

    config = load_config(args.config) if args.config else Config(loop=LoopConfig(name=args.loop))
    out = args.out or config.state_dir() / "reports" / args.loop
    db = open_database(_database_url(args), deferred=True)
    try:
        with db.session() as session:
            index = write_report(session, args.loop, out)
    finally:
        db.dispose()
    print(f"report: {index}")
    return 0


def cmd_daemon(args: argparse.Namespace) -> int:
    from selfloop.config import load_config
    from selfloop.daemon import Daemon

    config = _with_db(load_config(args.config, args.set), args.db)
    _setup_logging(args, config)
    return Daemon(config).run()


def cmd_track(args: argparse.Namespace) -> int:
    from selfloop.config import load_config, validate_config
    from selfloop.credentials import strip
    from selfloop.db.engine import open_database
    from selfloop.lock import LoopLock
    from selfloop.tracking import BACKENDS, sync

    url = _database_url(args)
    db = open_database(url)
    try:
        config = validate_config(_stored_config(db, args.loop, url), source=f"loop {args.loop} (stored config)")
        if args.config:  # one file may serve many loops; taken as validated (a dump would drop its credentials)
            config.tracking = load_config(args.config).tracking
        getattr(config.tracking, args.to).enabled = True
        with LoopLock(db, args.loop, "track"):
            try:
                backend, finished = BACKENDS[args.to](config), False
                try:
                    sent, finished = sync(db, config, args.to, backend)
                finally:
                    backend.close(finished)
            except ImportError as exc:
                raise SelfloopError(f"{args.to} is not installed ({exc.name}): pip install 'selfloop[{args.to}]'") from None
            except SelfloopError:
                raise
            except Exception as exc:  # noqa: BLE001 - a tracker's failure, in one line
                uri = config.tracking.mlflow.tracking_uri
                where = (strip(uri) if uri else "the local MLflow store") if args.to == "mlflow" else "W&B"
                text = textwrap.shorten(f"{exc.__class__.__name__}: {exc}", 400, placeholder=" ...")
                raise SelfloopError(f"{args.to} at {where} failed ({text}); nothing more was marked as sent: run "
                                    "`selfloop track` again once it answers") from None
    finally:
        db.dispose()
    print(f"loop {args.loop}: sent {sent} item(s) to {args.to}")
    return 0


def _loop_config(args: argparse.Namespace, db: Database, name: str, url: str) -> Config:
    """Where a loop's files are: --config's settings, else the loop's stored config (its state directory),
    with the database in use."""
    from selfloop.config import load_config, stored_config

    if args.config:
        config = load_config(args.config)
    else:
        config = stored_config(_stored_config(db, name, url), name)
    return _with_db(config, url)


def cmd_export(args: argparse.Namespace) -> int:
    from selfloop.db.engine import open_database
    from selfloop.export import nothing_to_export, rows, write

    if args.out is None and args.format == "parquet":
        raise SelfloopError("--format parquet needs --out FILE")
    db = open_database(_database_url(args), deferred=True)
    try:
        with db.session() as session:
            records = rows(session, args.loop, args.what, args.iteration)
            first = next(records, None)
            if first is None:  # say what the loop has instead of writing an empty file
                raise SelfloopError(nothing_to_export(session, args.loop, args.what, args.iteration))
            n = write(itertools.chain([first], records), args.out, args.format)
    finally:
        db.dispose()
    print(f"{args.out or 'stdout'}: {n} {args.what} row(s) of loop {args.loop}", file=sys.stderr if args.out is None else sys.stdout)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from selfloop.db.engine import open_database
    from selfloop.export import merge

    url = _database_url(args)
    db = open_database(url, deferred=True)
    try:
        config = _loop_config(args, db, args.loop, url)
        with db.session() as session:
            out, checkpoint_id = merge(session, args.loop, args.iteration, args.out, config)
    finally:
        db.dispose()
    print(f"{out}: the base model with checkpoint {checkpoint_id} merged in (safetensors, tokenizer, chat template)")
    return 0


def cmd_loop(args: argparse.Namespace) -> int:
    from selfloop.db.engine import open_database
    from selfloop.lineage import remove_loop, rename_loop

    url = _database_url(args)
    db = open_database(url)
    try:
        if args.loop_command == "rename":
            moved = rename_loop(db, args.name, args.new, _loop_config(args, db, args.name, url))
            print(f"loop {args.name} is now {args.new}" + (f" ({moved} checkpoint(s) moved with it)" if moved else ""))
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                raise SelfloopError(f"loop rm {args.name}: give --yes to delete without a terminal to confirm on")
            answer = input(f"delete loop {args.name!r}, all its rows and its checkpoint files? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return 1
        removed = remove_loop(db, args.name, _loop_config(args, db, args.name, url))
    finally:
        db.dispose()
    print(f"loop {args.name} deleted ({removed} checkpoint directories removed)")
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    import json

    from selfloop.lab.run import Lab

    lab = Lab(args.file, archive=getattr(args, "archive", False))
    if args.lab_command == "run":
        if args.jobs < 1:
            raise SelfloopError(f"--jobs {args.jobs}: must be at least 1")
        from selfloop.signals import StopFlag

        done = lab.run(args.only, args.jobs, StopFlag().install(), checked=args.checked, allow_dirty=args.allow_dirty)
        print(f"lab {lab.spec.name}: {len(done)} arm x seed piece(s) finished; results in {lab.results}")
        return 0
    if args.lab_command == "status":
        for piece, state in lab.status():
            print(f"{piece}\t{state}")
        return 0
    if args.lab_command == "gates":
        from selfloop.lab.gates import render, replay

        gate, report, found = lab.gate_decisions()
        if not found:
            raise SelfloopError(f"lab {lab.spec.name}: no promotion decision stored yet (no arm has trained and been gated)")
        result = replay(found, gate, report)
        print(json.dumps({"gate": gate, "reported": report, "rules": result}, indent=1) if args.json
              else render(found, gate, report, result), end="\n" if args.json else "")
        return 0
    from selfloop.lab.report import compare, markdown, write_report

    result = compare(lab.lines(), **lab.spec.roles())
    if args.out:
        index = write_report(lab.spec.name, result, args.out)
        print(f"wrote {index}", file=sys.stderr)
    for path in args.update or []:
        from selfloop.lab.report import update_docs

        if not Path(path).is_file():
            raise SelfloopError(f"--update {path}: no such file")
        command = f"selfloop lab report {args.file} --update {path}"
        if not update_docs(Path(path), lab.spec.name, result, lab.lines(), command):
            raise SelfloopError(f"--update {path}: no block of lab {lab.spec.name} there (add the markers "
                                f"<!-- lab-report:{lab.spec.name}:full:start --> and <!-- lab-report:{lab.spec.name}:full:end -->)")
        print(f"{path}: lab {lab.spec.name}'s blocks rewritten", file=sys.stderr)
    print(json.dumps(result, indent=1, sort_keys=True) if args.json else markdown(lab.spec.name, result), end="")
    return 0


COMMANDS = {
    "config": cmd_config, "db": cmd_db, "sql": cmd_sql, "history": cmd_history, "run": cmd_run, "resume": cmd_resume,
    "fork": cmd_fork, "status": cmd_status, "daemon": cmd_daemon, "report": cmd_report, "ui": cmd_ui, "track": cmd_track,
    "export": cmd_export, "merge": cmd_merge, "loop": cmd_loop, "lab": cmd_lab,
}


SHARED_OUTPUTS = ("report", "export", "merge")
# `history`'s table by default (every column with --columns all, or in csv/json/jsonl).
HISTORY_COLUMNS = ("loop", "iteration", "status", "samples", "mean_judge_score", "judge_auc", "vote_share",
                   "label_accuracy", "train_loss", "baseline_metric", "main_metric", "promoted", "warnings")


def _one_line(exc: Exception) -> str:
    """An unexpected error as one line, without the SQL text or parameters SQLAlchemy appends."""

    from sqlalchemy.exc import DBAPIError, StatementError

    full = _disk_full(exc)
    if full is not None:
        return f"no space left on device{f' writing {full}' if full else ''}: free some space, then try again (or resume)"
    if isinstance(exc, OSError) and exc.filename:
        return f"cannot use {exc.filename}: {exc.strerror or exc.__class__.__name__}"
    if isinstance(exc, StatementError):
        orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else None
        text = str(orig) if orig is not None else str(exc).split("\n[SQL:")[0]
        first = (text.strip().splitlines() or [exc.__class__.__name__])[0]
        if "database or disk is full" in first:
            return "the database's disk is full: free some space, then resume"
        if "unable to open database file" in first or "readonly database" in first:
            return f"cannot write the database ({first}): check that its directory exists and is writable"
        return f"database error: {first}"
    return f"unexpected error: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _disk_full(exc: BaseException) -> str | None:
    """The file being written when the disk filled ('' when unknown), or None when `exc` is not a full disk.
    Libraries report it in their own words (safetensors: "IoError(Os { code: 28, kind: StorageFull ... })"),
    so the whole chain of causes is read."""
    import errno

    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 10:
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            return str(cause.filename or "")
        if "No space left on device" in str(cause) or "StorageFull" in str(cause):
            return ""
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return None


def _not_under_a_launcher(command: str) -> None:
    """A loop is one process; N copies started by `accelerate launch`/torchrun would race for the loop's lock."""
    if command in ("run", "resume", "daemon") and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ConfigError("selfloop runs a loop in one process, not under accelerate launch or torchrun: set "
                          "train.processes to N and the train phase launches N training processes itself")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from selfloop.credentials import redact, redact_exception
    from selfloop.log import setup_logging

    # The store, checkpoints, caches and logs are owner-only; what is made to share (a report, an export, a merged
    # model) follows the user's umask.
    if args.command not in SHARED_OUTPUTS:
        os.umask(0o077)

    setup_logging("DEBUG" if args.debug else "INFO", json_lines=args.log_json)
    try:
        _not_under_a_launcher(args.command)
        code = COMMANDS[args.command](args)
    except SelfloopError as exc:
        if args.debug:
            raise redact_exception(exc)  # noqa: B904 - the same exception, its message masked, with its own chain
        print(redact(f"selfloop: error: {exc}"), file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("selfloop: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        # The reader went away (`selfloop history | head`): stop quietly. Point stdout at /dev/null so the
        # interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except Exception as exc:  # noqa: BLE001 - an unexpected failure: still one line unless --debug
        if args.debug:
            raise redact_exception(exc)  # noqa: B904 - the same exception, its message masked, with its own chain
        print(redact(f"selfloop: {_one_line(exc)} (run with --debug for the traceback)"), file=sys.stderr)
        code = 1
    sys.exit(code)

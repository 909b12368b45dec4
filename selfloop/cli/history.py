"""What a loop left, read out: history (a row per iteration), export (TRL's dataset forms), report (an offline HTML
folder), track (a tracker's backfill)."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import textwrap
from pathlib import Path

from selfloop.cli.common import add_db, database_url, loop_snapshot
from selfloop.errors import SelfloopError
from selfloop.render import FORMATS


def add(sub: argparse._SubParsersAction) -> None:
    """Add `history`, `export`, `report`, `track` to the parser."""
    p = sub.add_parser("history", help="one row per iteration (the iteration_summary view), every held-out suite's "
                       "accuracy, and fork lineage")
    add_db(p)
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
    add_db(p)

    p = sub.add_parser("report", help="write a loop's history as an HTML folder that opens offline (the dashboard's charts)")
    p.add_argument("loop", metavar="LOOP")
    p.add_argument("--out", type=Path, metavar="DIR", help="output directory (default: <state_dir>/reports/LOOP)")
    add_db(p)

    p = sub.add_parser(
        "track", help="send a loop's stored history to MLflow or W&B (backfill, or catch up after an outage)",
        description="Send what the tracker has not received yet of LOOP's stored history: its config, every training "
        "step, each iteration's figures, its completions and its events. The tracker settings come from --config's "
        "tracking section (only that section, and its database, are used: one file may serve many loops), else the "
        "loop's stored config. Refused while a process runs the loop (that process tracks it itself).",
    )
    p.add_argument("loop", metavar="LOOP")
    p.add_argument("--to", required=True, choices=["mlflow", "wandb"], help="the tracker")
    add_db(p)


# `history`'s table by default (every column with --columns all, or in csv/json/jsonl).
HISTORY_COLUMNS = ("loop", "iteration", "status", "samples", "mean_judge_score", "judge_auc", "vote_share",
                   "label_accuracy", "train_loss", "baseline_metric", "main_metric", "promoted", "warnings")


def cmd_history(args: argparse.Namespace) -> int:

    from selfloop.db import queries
    from selfloop.db.engine import open_database
    from selfloop.render import compact, render, select_columns

    db = open_database(database_url(args), deferred=True)
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


def cmd_export(args: argparse.Namespace) -> int:
    from selfloop.db.engine import open_database
    from selfloop.export import nothing_to_export, rows, write

    if args.out is None and args.format == "parquet":
        raise SelfloopError("--format parquet needs --out FILE")
    db = open_database(database_url(args), deferred=True)
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


def cmd_report(args: argparse.Namespace) -> int:
    from selfloop.config import Config, LoopConfig, load_config
    from selfloop.db.engine import open_database
    from selfloop.report import write_report

    config = load_config(args.config) if args.config else Config(loop=LoopConfig(name=args.loop))
    out = args.out or config.state_dir() / "reports" / args.loop
    db = open_database(database_url(args), deferred=True)
    try:
        with db.session() as session:
            index = write_report(session, args.loop, out)
    finally:
        db.dispose()
    print(f"report: {index}")
    return 0


def cmd_track(args: argparse.Namespace) -> int:
    from selfloop.config import load_config, validate_config
    from selfloop.credentials import strip
    from selfloop.db.engine import open_database
    from selfloop.lock import LoopLock
    from selfloop.tracking import BACKENDS, sync

    url = database_url(args)
    db = open_database(url)
    try:
        config = validate_config(loop_snapshot(db, args.loop, url), source=f"loop {args.loop} (stored config)")
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


COMMANDS = {"history": cmd_history, "export": cmd_export, "report": cmd_report, "track": cmd_track}

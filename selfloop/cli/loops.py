"""The commands that run or change loops: run, resume, fork, status, daemon, loop rm/rename, merge."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from selfloop.cli.common import (
    add_db,
    check_iterations,
    config_of,
    database_url,
    loop_config,
    loop_logging,
    loop_snapshot,
    run_foreground,
    unpause,
    with_db,
)
from selfloop.errors import SelfloopError


def add(sub: argparse._SubParsersAction) -> None:
    """Add `run`, `resume`, `fork`, `status`, `daemon`, `loop`, `merge` to the parser."""
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
    add_db(p)

    p = sub.add_parser("daemon", help="run the config's loop until stopped (systemd: see systemd/selfloop.service)")
    p.add_argument("--config", type=Path, metavar="FILE", required=True)
    p.add_argument("--db", metavar="URL", help="database URL (overrides the config's database.url)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (repeatable)")

    lp = sub.add_parser("loop", help="remove or rename a loop")
    loop_sub = lp.add_subparsers(dest="loop_command", metavar="ACTION", required=True)
    p = loop_sub.add_parser("rm", help="delete a loop: its rows and its checkpoint files (refused while it runs or "
                                       "while another loop starts from one of its checkpoints)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add_db(p)
    p = loop_sub.add_parser("rename", help="rename a loop and move its checkpoints with it (refused while it runs)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("new", metavar="NEW")
    add_db(p)

    p = sub.add_parser("merge", help="save the base model with a checkpoint's adapter merged in (a plain model)")
    p.add_argument("loop", metavar="LOOP")
    p.add_argument("--iteration", type=int, metavar="N", help="iteration N's checkpoint (default: the loop's current policy)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    add_db(p)


def cmd_run(args: argparse.Namespace) -> int:
    from selfloop.config import load_config

    check_iterations(args.iterations)
    overrides = [*args.set, *(["metrics.enabled=true", f"metrics.port={args.metrics_port}"] if args.metrics_port is not None else [])]
    config = with_db(load_config(args.config, overrides), args.db)
    loop_logging(args, config)
    return run_foreground(config, args.iterations)


def cmd_resume(args: argparse.Namespace) -> int:
    from selfloop.config import validate_config
    from selfloop.db.engine import open_database

    check_iterations(args.iterations)
    url = database_url(args)
    if args.config:  # the loop's own config file, as `run` takes it (what the loop computes may not change)
        config = with_db(config_of(args.config, args.loop, args.set), url)
    else:
        db = open_database(url, deferred=True)
        try:
            snapshot = loop_snapshot(db, args.loop, url)
        finally:
            db.dispose()
        from selfloop.config import apply_overrides

        snapshot = apply_overrides(snapshot, args.set)
        config = with_db(validate_config(snapshot, source=f"loop {args.loop} (stored config)"), url)
    loop_logging(args, config)
    if args.unpause:
        unpause(url, args.loop)
    return run_foreground(config, args.iterations)


def cmd_fork(args: argparse.Namespace) -> int:
    from selfloop.config import read_config_file
    from selfloop.lineage import fork_loop

    data = read_config_file(args.config) if args.config else None
    name = fork_loop(database_url(args), args.loop, args.at, args.name, data, args.set,
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

    db = open_database(database_url(args), deferred=True)
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


def cmd_daemon(args: argparse.Namespace) -> int:
    from selfloop.config import load_config
    from selfloop.daemon import Daemon

    config = with_db(load_config(args.config, args.set), args.db)
    loop_logging(args, config)
    return Daemon(config).run()


def cmd_loop(args: argparse.Namespace) -> int:
    from selfloop.db.engine import open_database
    from selfloop.lineage import remove_loop, rename_loop

    url = database_url(args)
    db = open_database(url)
    try:
        if args.loop_command == "rename":
            moved = rename_loop(db, args.name, args.new, loop_config(args, db, args.name, url))
            print(f"loop {args.name} is now {args.new}" + (f" ({moved} checkpoint(s) moved with it)" if moved else ""))
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                raise SelfloopError(f"loop rm {args.name}: give --yes to delete without a terminal to confirm on")
            answer = input(f"delete loop {args.name!r}, all its rows and its checkpoint files? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return 1
        removed = remove_loop(db, args.name, loop_config(args, db, args.name, url))
    finally:
        db.dispose()
    print(f"loop {args.name} deleted ({removed} checkpoint directories removed)")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from selfloop.db.engine import open_database
    from selfloop.export import merge

    url = database_url(args)
    db = open_database(url, deferred=True)
    try:
        config = loop_config(args, db, args.loop, url)
        with db.session() as session:
            out, checkpoint_id = merge(session, args.loop, args.iteration, args.out, config)
    finally:
        db.dispose()
    print(f"{out}: the base model with checkpoint {checkpoint_id} merged in (safetensors, tokenizer, chat template)")
    return 0


COMMANDS = {"run": cmd_run, "resume": cmd_resume, "fork": cmd_fork, "status": cmd_status,
            "daemon": cmd_daemon, "loop": cmd_loop, "merge": cmd_merge}

"""`selfloop config`: validate a config file, show it with defaults filled in, print the reference."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from selfloop.errors import ConfigError


def add(sub: argparse._SubParsersAction) -> None:
    """Add `config` to the parser."""
    cfg = sub.add_parser("config", help="validate or show a config file")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    p = cfg_sub.add_parser("validate", help="exit 0 if FILE is valid; otherwise name each bad field and value")
    p.add_argument("file", type=Path)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field (repeatable)")
    p = cfg_sub.add_parser("show", help="print the effective config, defaults filled in")
    p.add_argument("file", type=Path)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field (repeatable)")
    cfg_sub.add_parser("reference", help="print the config reference (markdown) generated from the models")


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


COMMANDS = {"config": cmd_config}

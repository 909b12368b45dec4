"""The `selfloop` command. Thin: parses arguments, calls into the package, prints results.

Every error a user can fix is one line on stderr (`--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

from selfloop import __version__
from selfloop.cli import config, db, history, lab, loops, ui
from selfloop.errors import ConfigError, SelfloopError

MODULES = (config, db, loops, history, ui, lab)  # the order `selfloop --help` lists their commands in
COMMANDS = {name: run for module in MODULES for name, run in module.COMMANDS.items()}


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


SHARED_OUTPUTS = ("report", "export", "merge")


def one_line(exc: Exception) -> str:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfloop", description=_description(), epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"selfloop {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--log-json", action="store_true", help="log JSON lines instead of text")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in MODULES:
        module.add(sub)
    return parser


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
        print(redact(f"selfloop: {one_line(exc)} (run with --debug for the traceback)"), file=sys.stderr)
        code = 1
    sys.exit(code)

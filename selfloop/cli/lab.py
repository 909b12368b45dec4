"""`selfloop lab`: run a lab file's arms x seeds, compare them, read its status and replay its gates."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from selfloop.errors import SelfloopError


def add(sub: argparse._SubParsersAction) -> None:
    """Add `lab` to the parser."""
    lab = sub.add_parser("lab", help="run a lab file's arms x seeds as loops on one store and compare them "
                                     "(against its control and oracle arms, on the test splits)")
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    p = lab_sub.add_parser("run", help="run (or resume) every unfinished arm x seed to its end; each finished one "
                                       "appends a line (commit, date, machine, held-out rows) to the lab's results file")
    p.add_argument("file", type=Path, metavar="LAB", help="the lab file (YAML; see docs/lab.md)")
    p.add_argument("--only", action="append", metavar="ARM[/SEED]", help="run only these pieces, in the order given (repeatable)")
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


def cmd_lab(args: argparse.Namespace) -> int:

    from selfloop.lab.run import Lab

    lab = Lab(args.file, archive=getattr(args, "archive", False))
    if args.lab_command == "run":
        if args.jobs < 1:
            raise SelfloopError(f"--jobs {args.jobs}: must be at least 1")
        from selfloop.signals import StopFlag

        done = lab.run(args.only, args.jobs, StopFlag().install(), checked=args.checked, allow_dirty=args.allow_dirty)
        print(f"lab {lab.spec.name}: {len(done)} arm x seed piece(s) finished; results in {lab.results}")
        if lab.failed:
            raise SelfloopError(f"lab {lab.spec.name}: {len(lab.failed)} piece(s) failed (the others ran): "
                                + "; ".join(f"{piece}: {why}" for piece, why in lab.failed))
        return 0
    if args.lab_command == "status":
        for piece, state in lab.status():
            print(f"{piece}\t{state}")
        return 0
    if args.lab_command == "gates":
        from selfloop.lab.gates import label_free_agreement, render, render_agreement, replay

        gate, report, found = lab.gate_decisions()
        if not found:
            raise SelfloopError(f"lab {lab.spec.name}: no promotion decision stored yet (no arm has trained and been gated)")
        result = replay(found, gate, report)
        agreement = label_free_agreement(found, gate, lab.tolerance_of)
        print(json.dumps({"gate": gate, "reported": report, "rules": result, "label_free": agreement}, indent=1)
              if args.json else render(found, gate, report, result) + render_agreement(agreement),
              end="\n" if args.json else "")
        return 0
    from selfloop.lab.report import compare, markdown, write_report

    result = compare(lab.lines(), **lab.spec.roles(), guards=lab.guards())
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


COMMANDS = {"lab": cmd_lab}

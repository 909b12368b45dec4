"""Benchmark: one lab piece end to end, this tree against the code before the lab-time work (issue 47), in one run.

    .venv/bin/python bench/lab_piece.py                              # arithmetic stated/0 and its control, then
                                                                     # instruction following raft/0 (about an hour)
    .venv/bin/python bench/lab_piece.py --pieces arithmetic:stated/0 --reps 2
    .venv/bin/python bench/lab_piece.py --old 1a2b3c4 --old-tree /tmp/old-selfloop
    .venv/bin/python bench/lab_piece.py --old 06655ce --pieces labs/arithmetic.yaml:stated/0   # one lever, one lab file

Each piece is a `selfloop lab run LAB --only ARM/SEED` of a checked-in lab file (LAB: a short name below, or the
file's path in the tree), run by each side's own code and its own copy of that file (the old one checked out beside
this tree with `git worktree`) on a fresh store of its own, the sides alternating (old,
new, old, new...) so that a slower machine minute falls on both. The lab files are copied with their results and
stores redirected to a temporary directory: nothing checked in is touched. The new side's evaluation cache
(eval.cache_dir) is warmed first by the lab's control piece, as in a lab where the control runs first, and those
seconds are reported apart (`warm_seconds`); each run starts from its own copy of it, and --warm-both gives the old
side one too (to time the levers that came after the cache against code that has it); --cold leaves it empty.

Prints per piece and side the wall seconds and the lab's per-phase seconds, the ratio new/old (the mean of the
reps), and whether the two results lines' item flags (every held-out item right or wrong, at the start and at the
end, per suite) are equal; ends with one line of JSON holding every side's effective settings (commit, the config's
sha256, the lab file's budget and arm overlay, the versions and CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent.parent
BEFORE = "e106e67"  # main when issue 47 began: the code whose time a lab took
PIECES = {"arithmetic": "labs/methods.yaml", "instructions": "labs/methods-instructions.yaml"}
DEFAULT = ["arithmetic:control/0", "arithmetic:stated/0", "instructions:raft/0"]


def git(*args: str, cwd: Path = HERE) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def old_tree(ref: str, where: Path | None) -> Path:
    """The old code checked out (a detached worktree, made once and reused)."""
    path = where or Path(tempfile.gettempdir()) / f"selfloop-bench-{git('rev-parse', '--short', ref)}"
    if not (path / "selfloop").is_dir():
        if path.exists():
            shutil.rmtree(path)
        git("worktree", "add", "--detach", str(path), ref)
    # The installed package maps selfloop.migrations and selfloop.prompts to this tree's folders (package-dir): links
    # inside the old tree's package come first on its PYTHONPATH, so the old code reads its own.
    for name in ("migrations", "prompts"):
        link = path / "selfloop" / name
        if not link.exists():
            link.symlink_to(Path("..") / name)
    return path


def lab_copy(tree: Path, lab: str, work: Path, extra_budget: dict | None) -> Path:
    """The tree's lab file, its config absolute, its results and store in `work`."""
    source = tree / lab
    data = yaml.safe_load(source.read_text())
    data["config"] = str((source.parent / data["config"]).resolve())
    data["results"] = str(work / "results.jsonl")
    data["database"] = f"sqlite:///{work / 'lab.db'}"
    if extra_budget:
        data["budget"] = {**extra_budget, **(data.get("budget") or {})}
    target = work / Path(lab).name
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def run_piece(tree: Path, lab: Path, only: str, work: Path) -> dict:
    """One `lab run --only`, timed; its results line."""
    env = {**os.environ, "PYTHONPATH": str(tree), "SELFLOOP_STATE_DIR": str(work / "state")}
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "selfloop", "lab", "run", str(lab), "--only", only, "--allow-dirty"],
                         cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if out.returncode != 0:
        raise SystemExit(f"{tree}: lab run --only {only} failed:\n{out.stderr[-3000:]}")
    lines = [json.loads(line) for line in (work / "results.jsonl").read_text().splitlines() if line.strip()]
    line = next(line for line in lines if f"{line['arm']}/{line['seed']}" == only)
    return {"seconds": round(seconds, 1), "run_seconds": line["run_seconds"], "phase_seconds": line["phase_seconds"],
            "flags": {s: [v["start"], v["final"]] for s, v in line["suites"].items()},
            "config_sha256": line.get("config_sha256"), "commit": line.get("commit"), "versions": line.get("versions"),
            "cpu": line.get("cpu")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", default=BEFORE, help=f"the code to compare with (default {BEFORE})")
    parser.add_argument("--old-tree", type=Path, help="where the old code is or goes (default: a temporary worktree)")
    parser.add_argument("--pieces", default=",".join(DEFAULT),
                        help=f"LAB:ARM/SEED,... with LAB one of {', '.join(PIECES)} or a lab file's path in the tree, "
                        f"which both sides must have (default {','.join(DEFAULT)})")
    parser.add_argument("--reps", type=int, default=1, help="runs per side and piece, alternating")
    parser.add_argument("--cold", action="store_true", help="start the new side's eval cache empty")
    parser.add_argument("--warm-both", action="store_true",
                        help="give the old side the warmed eval cache too (old code that has eval.cache_dir): times the "
                        "levers after the cache")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    old = old_tree(args.old, args.old_tree)
    sides = {"old": old, "new": HERE}
    scratch = Path(tempfile.mkdtemp(prefix="lab-piece-"))
    cache = scratch / "eval-cache"
    results = []
    warmed: dict[str, float] = {}
    for spec in args.pieces.split(","):
        kind, _, only = spec.rpartition(":")
        lab = PIECES.get(kind, kind)
        for side, tree in sides.items():
            if not (tree / lab).is_file():
                raise SystemExit(f"--pieces {spec}: no lab file {lab} in the {side} tree ({tree})")
        if not args.cold and kind not in warmed:
            work = scratch / f"warm-{Path(lab).stem}"
            work.mkdir()
            started = time.monotonic()
            run_piece(HERE, lab_copy(HERE, lab, work, {"eval.cache_dir": str(cache)}),
                      f"{yaml.safe_load((HERE / lab).read_text())['control']}/0", work)
            warmed[kind] = round(time.monotonic() - started, 1)
        runs: dict[str, list[dict]] = {"old": [], "new": []}
        for rep in range(args.reps):
            for side, tree in sides.items():
                work = scratch / f"{Path(lab).stem}-{only.replace('/', '-')}-{side}-{rep}"
                work.mkdir()
                # Each run gets its own copy of the warmed cache (the start's answers only): a run that found an
                # earlier run's candidates there (the same weights, so the same keys) would answer nothing.
                own = work / "eval-cache"
                if cache.is_dir() and not args.cold:
                    shutil.copytree(cache, own)
                cached = side == "new" or args.warm_both
                done = run_piece(tree, lab_copy(tree, lab, work, {"eval.cache_dir": str(own)} if cached else None), only, work)
                runs[side].append(done)
                print(f"{spec} {side} rep {rep}: {done['seconds']:.0f} s  "
                      + "  ".join(f"{k} {v:.0f}" for k, v in sorted(done["phase_seconds"].items())), flush=True)
        mean = {side: statistics.fmean(r["seconds"] for r in runs[side]) for side in runs}
        equal = all(r["flags"] == runs["old"][0]["flags"] for side in runs for r in runs[side])
        phases = {side: {p: round(statistics.fmean(r["phase_seconds"].get(p, 0.0) for r in runs[side]), 1)
                         for p in sorted({p for r in runs[side] for p in r["phase_seconds"]})} for side in runs}
        results.append({"piece": spec, "ratio": round(mean["new"] / mean["old"], 3), "flags_equal": equal,
                        "seconds": {s: round(v, 1) for s, v in mean.items()}, "phase_seconds": phases,
                        "reps": {s: [r["seconds"] for r in runs[s]] for s in runs},
                        "settings": {s: {k: runs[s][0][k] for k in ("commit", "config_sha256", "versions", "cpu")}
                                     for s in runs},
                        "lab_file": lab, "overlay": yaml.safe_load((HERE / lab).read_text())["arms"][only.split("/")[0]]})
        print(f"{spec}: new/old {results[-1]['ratio']:.2f}, item flags equal: {equal}", flush=True)
    report = {"bench": "lab_piece", "old": git("rev-parse", args.old), "new": git("rev-parse", "HEAD"),
              "new_dirty": bool(git("status", "--porcelain", "--untracked-files=no")), "reps": args.reps,
              "cache": "cold" if args.cold else ("warm, both sides" if args.warm_both else "warm, new side"),
              "warm_seconds": warmed, "pieces": results,
              "goal": "ratio <= 0.50 on stated/0 and raft/0"}
    text = json.dumps(report)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

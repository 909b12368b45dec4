"""Benchmark: `make demo` end to end, this tree against the code before the lab-time work (issue 47), in one run.

    .venv/bin/python bench/demo.py                       # the old demo's config on both sides, then today's demo
    .venv/bin/python bench/demo.py --reps 2 --no-today
    .venv/bin/python bench/demo.py --model tiny --max-iterations 1     # a smoke test (seconds)

What `make demo` runs (`selfloop run`, then `history` and `report`) on a fresh store and state directory, timed. Both
sides run the same config, the old tree's `configs/demo-cpu.yaml` (the demo when the issue was filed; today's demo
trains on another reward, so only this one can show the same history from both codes): the old code from its own
tree (`git worktree`), the new from this one, alternating. Their histories are compared row by row (every held-out
answer and its grade at every iteration, every sample's text, every promotion), and the ratio new / old is the mean of
the reps. Then this tree's `make demo` config (`--today`, default on) runs once, for the README's demo time.

Prints one line per run, then one line of JSON with both sides' seconds, the ratio, whether the histories are equal,
each run's phase seconds from the store, and the effective settings (commits, config sha256, versions, CPU).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab_piece import BEFORE, HERE, git, old_tree  # the sibling benchmark: its worktree handling

DEMO = "configs/demo-cpu.yaml"
# What a history is, for the comparison: every held-out answer, every sample, every promotion decision.
HISTORY = {
    "eval_items": "SELECT i.number AS iteration, e.role, e.suite, e.item_index, e.response, e.correct FROM eval_items e "
                  "JOIN iterations i ON i.id = e.iteration_id ORDER BY 1, 2, 3, 4",
    "samples": "SELECT i.number AS iteration, p.item_index, p.text AS prompt, s.sample_index, s.text FROM samples s "
               "JOIN prompts p ON p.id = s.prompt_id JOIN iterations i ON i.id = s.iteration_id ORDER BY 1, 2, 4",
    "promotions": "SELECT number AS iteration, promoted FROM iterations ORDER BY 1",
}
PHASES = ("SELECT phase, SUM((julianday(finished_at) - julianday(started_at)) * 86400) AS seconds FROM phase_runs "
          "GROUP BY phase ORDER BY phase")  # SQLite: both sides' stores are SQLite files


def config_copy(source: Path, work: Path, overrides: dict) -> Path:
    """The config with `overrides` ({'section.key': value}) applied, written into `work`."""
    data = yaml.safe_load(source.read_text())
    for dotted, value in overrides.items():
        section, key = dotted.split(".", 1)
        data.setdefault(section, {})[key] = value
    target = work / source.name
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def selfloop(tree: Path, work: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree), "SELFLOOP_STATE_DIR": str(work / "state")}
    out = subprocess.run([sys.executable, "-m", "selfloop", *args], cwd=tree, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{tree}: selfloop {args[0]} failed:\n{out.stderr[-3000:]}")
    return out.stdout


def run_demo(tree: Path, config: Path, work: Path) -> dict:
    """`make demo`'s three commands on a fresh store, timed; the store's history and phase seconds."""
    db = f"sqlite:///{work / 'demo.db'}"
    name = yaml.safe_load(config.read_text())["loop"]["name"]
    started = time.monotonic()
    selfloop(tree, work, "run", "--config", str(config), "--db", db)
    ran = time.monotonic() - started
    selfloop(tree, work, "history", "--loop", name, "--db", db)
    selfloop(tree, work, "report", name, "--db", db, "--out", str(work / "report"))
    seconds = time.monotonic() - started
    read = lambda query: json.loads(selfloop(HERE, work, "sql", query, "--db", db, "--format", "json"))  # noqa: E731
    return {"seconds": round(seconds, 1), "run_seconds": round(ran, 1),
            "phase_seconds": {r["phase"]: round(r["seconds"], 1) for r in read(PHASES)},
            "history": {table: read(query) for table, query in HISTORY.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", default=BEFORE, help=f"the code to compare with (default {BEFORE})")
    parser.add_argument("--old-tree", type=Path, help="where the old code is or goes (default: a temporary worktree)")
    parser.add_argument("--reps", type=int, default=1, help="runs per side, alternating")
    parser.add_argument("--no-today", dest="today", action="store_false", help=f"skip this tree's {DEMO} run")
    parser.add_argument("--model", help="another model.base for both sides (tiny: a smoke test)")
    parser.add_argument("--max-iterations", type=int, help="another loop.max_iterations for both sides")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    overrides: dict = {}
    if args.model:
        overrides["model.base"] = args.model
    if args.max_iterations:
        overrides["loop.max_iterations"] = args.max_iterations
    old = old_tree(args.old, args.old_tree)
    sides = {"old": old, "new": HERE}
    scratch = Path(tempfile.mkdtemp(prefix="demo-bench-"))
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for rep in range(args.reps):
        for side, tree in sides.items():
            work = scratch / f"{side}-{rep}"
            work.mkdir()
            done = run_demo(tree, config_copy(old / DEMO, work, overrides), work)
            runs[side].append(done)
            print(f"{side} rep {rep}: {done['seconds']:.0f} s  "
                  + "  ".join(f"{k} {v:.0f}" for k, v in done["phase_seconds"].items()), flush=True)
    today = None
    if args.today:
        work = scratch / "today"
        work.mkdir()
        today = run_demo(HERE, config_copy(HERE / DEMO, work, overrides), work)
        print(f"today's demo ({DEMO} of this tree): {today['seconds']:.0f} s", flush=True)
    mean = {side: statistics.fmean(r["seconds"] for r in runs[side]) for side in runs}
    first = runs["old"][0]["history"]
    equal = {table: all(r["history"][table] == first[table] for side in runs for r in runs[side]) for table in HISTORY}
    report = {
        "bench": "demo", "old": git("rev-parse", args.old), "new": git("rev-parse", "HEAD"),
        "new_dirty": bool(git("status", "--porcelain", "--untracked-files=no")), "reps": args.reps,
        "seconds": {s: round(v, 1) for s, v in mean.items()}, "ratio": round(mean["new"] / mean["old"], 3),
        "history_equal": equal, "rows": {table: len(first[table]) for table in HISTORY},
        "runs": {s: [{k: r[k] for k in ("seconds", "run_seconds", "phase_seconds")} for r in runs[s]] for s in runs},
        "today": {k: today[k] for k in ("seconds", "run_seconds", "phase_seconds")} if today else None,
        "settings": {
            "config": f"{args.old}:{DEMO}", "config_sha256": hashlib.sha256((old / DEMO).read_bytes()).hexdigest(),
            "today_config_sha256": hashlib.sha256((HERE / DEMO).read_bytes()).hexdigest(), "overrides": overrides,
            "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
            "threads": os.cpu_count()},
        "goal": "ratio <= 0.60, the same history",
    }
    text = json.dumps(report)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

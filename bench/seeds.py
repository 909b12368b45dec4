"""Benchmark: a demo's gain over several seeds, on held-out problems worded as in training (seen) and in
wordings never trained on (unseen), each against the control on the same problems.

    .venv/bin/python bench/seeds.py --config configs/demo-cpu.yaml --control configs/demo-cpu-control.yaml
    .venv/bin/python bench/seeds.py --config configs/demo-selfreward.yaml --control configs/demo-selfreward-control.yaml
    .venv/bin/python bench/seeds.py --config configs/demo-cpu.yaml --seeds 0 --label varied --set generation.tasks.phrasing=varied

Each seed runs the demo as `selfloop run` does (`--set loop.seed=S`), in its own SQLite file under
.bench/seeds/. A config whose suites have no 'unseen' twin gets one added for the measurement (same
problems, held-out wordings). The control (training off) runs once: greedy evaluation of the base model
does not depend on the seed, which the script checks against every seed's own starting-policy rows; a finished
control of the very same command (config text, suites) is kept for the next lever.

Per seed and suite: accuracy of the starting policy and of the loop's final policy (the last promoted
candidate), and the paired 95% interval of final minus control on the same items. Across seeds: mean and
sample standard deviation of the gain. Ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from selfloop.config import load_config
from selfloop.db.engine import open_database
from selfloop.db.models import EvalItem, Iteration, Loop
from selfloop.evals.stats import paired_difference

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".bench" / "seeds"


def suites_with_unseen(config_path: Path) -> list[dict]:
    """The config's suites plus an 'unseen' twin of each built-in suite that lacks one."""
    suites = [s.model_dump(mode="json", exclude_none=True) for s in load_config(config_path).eval.suites]
    names = {s["name"] for s in suites}
    for s in list(suites):
        if s["kind"] != "jsonl" and s.get("phrasing", "seen") == "seen" and f"{s['name']}-unseen" not in names:
            suites.append({**s, "name": f"{s['name']}-unseen", "phrasing": "unseen"})
    return suites


def run(config: Path, name: str, seed: int, suites: list[dict], overrides: list[str] = (), reuse: bool = False) -> float:
    """Run the loop afresh in its own SQLite file; with `reuse`, keep a finished run of the very same command
    (its config file's text, seed, suites and overrides, recorded beside the file) instead."""
    db, done = OUT / f"{name}.db", OUT / f"{name}.command.json"
    cmd = [sys.executable, "-m", "selfloop", "run", "--config", str(config), "--db", f"sqlite:///{db}",
           "--set", f"loop.seed={seed}", "--set", f"loop.name={name}",
           # JSON is YAML without anchors: the strict loader refuses the aliases yaml.dump writes for shared dicts
           "--set", "eval.suites=" + json.dumps(suites)]
    for override in overrides:
        cmd += ["--set", override]
    record = json.dumps({"command": cmd[3:], "config": Path(config).read_text()})
    if reuse and db.exists() and done.exists() and done.read_text() == record:
        return 0.0
    db.unlink(missing_ok=True)
    done.unlink(missing_ok=True)
    started = time.monotonic()
    env = {"SELFLOOP_STATE_DIR": str(OUT / "state")}
    subprocess.run(cmd, check=True, env={**__import__("os").environ, **env})
    done.write_text(record)
    return time.monotonic() - started


def items(name: str) -> dict[str, dict[str, list[bool]]]:
    """Per suite: 'start' (the starting policy's rows of iteration 1) and 'final' (the last promoted
    candidate's rows; the start when nothing was promoted), as correct flags in item order."""
    db = open_database(f"sqlite:///{OUT / f'{name}.db'}", deferred=True)
    try:
        with db.session() as s:
            loop = s.scalars(select(Loop).where(Loop.name == name)).one()
            iterations = s.scalars(select(Iteration).where(Iteration.loop_id == loop.id).order_by(Iteration.number)).all()
            promoted = [it for it in iterations if it.promoted]

            def rows(iteration_id: int, role: str) -> dict[str, list[bool]]:
                out: dict[str, list[bool]] = {}
                for suite, correct in s.execute(select(EvalItem.suite, EvalItem.correct).where(
                        EvalItem.iteration_id == iteration_id, EvalItem.role == role).order_by(EvalItem.suite, EvalItem.item_index)):
                    out.setdefault(suite, []).append(bool(correct))
                return out

            start = rows(iterations[0].id, "baseline")
            final = rows(promoted[-1].id, "candidate") if promoted else start
    finally:
        db.dispose()
    return {suite: {"start": start[suite], "final": final[suite]} for suite in start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--control", type=Path, help="the same loop with training off (run once)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for the trained loop (a lever), as `selfloop run --set` takes it")
    parser.add_argument("--label", help="names the runs (default: the config's loop name); give one per lever")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    suites = suites_with_unseen(args.config)
    base = args.label or load_config(args.config).loop.name
    control = None
    result: dict = {"config": str(args.config), "overrides": args.overrides, "suites": suites, "seeds": {}}
    if args.control:
        name = f"{load_config(args.control).loop.name}-bench"
        # The control's greedy evaluation of the base model is the same for every lever: a finished run of the
        # same command is kept (control_seconds 0.0 says so).
        result["control_seconds"] = round(run(args.control, name, args.seeds[0], suites, reuse=True), 1)
        control = {suite: v["final"] for suite, v in items(name).items()}
    for seed in args.seeds:
        name = f"{base}-s{seed}"
        seconds = run(args.config, name, seed, suites, args.overrides)
        per_suite = {}
        for suite, v in items(name).items():
            reference = control[suite] if control else v["start"]
            if control and v["start"] != control[suite]:
                raise SystemExit(f"seed {seed}: the starting policy's {suite} rows differ from the control's")
            mean, low, high = paired_difference(v["final"], reference)
            per_suite[suite] = {"n": len(v["final"]), "start": sum(v["start"]) / len(v["start"]),
                                "final": sum(v["final"]) / len(v["final"]), "gain": mean, "gain_ci95": [low, high]}
        result["seeds"][seed] = {"seconds": round(seconds, 1), "suites": per_suite}
        print(json.dumps({"seed": seed, **result["seeds"][seed]}), flush=True)
    summary = {}
    for suite in result["seeds"][args.seeds[0]]["suites"]:
        gains = [result["seeds"][s]["suites"][suite]["gain"] for s in args.seeds]
        summary[suite] = {"mean_gain": statistics.fmean(gains), "sd_gain": statistics.stdev(gains) if len(gains) > 1 else 0.0,
                          "gains": gains, "beyond_noise": [result["seeds"][s]["suites"][suite]["gain_ci95"][0] > 0 for s in args.seeds]}
    result["summary"] = summary
    print(json.dumps(result))


if __name__ == "__main__":
    main()

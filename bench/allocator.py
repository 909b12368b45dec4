"""Benchmark: glibc's defaults against selfloop's allocator settings (`selfloop/allocator.py`) on an evaluation's decode.

    .venv/bin/python bench/allocator.py                    # 200 validation items, 64 tokens, 2 reps (about 6 minutes)
    .venv/bin/python bench/allocator.py --model tiny --items 8 --max-new-tokens 8 --reps 1    # a smoke test

Each run is a fresh process that sets the allocator as the `selfloop` command does (or leaves glibc's defaults:
SELFLOOP_MALLOC=system), loads the model, decodes a first batch to warm up, then answers the instruction lab's `val`
suite greedily as the evaluate phase does (the hf engine, batches of 128) and reports that decode's seconds, its minor
page faults and a hash of the answers. The two settings alternate. Prints one JSON line: both sides' seconds, the
ratio, whether every run wrote the same answers, the page faults and the settings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def child(model: str, items: int, max_new_tokens: int) -> dict:
    from selfloop.allocator import keep_freed_memory

    applied = keep_freed_memory()
    from selfloop.config import SuiteConfig
    from selfloop.config.base import default_cache_dir
    from selfloop.engines.base import Sampling
    from selfloop.engines.chat import prompt_chat
    from selfloop.engines.hf import HFEngine
    from selfloop.evals.suites import load_suite
    from selfloop.models.resolve import resolve_model

    engine = HFEngine(resolve_model(model, default_cache_dir()).path, batch_size=128)
    suite = SuiteConfig(name="val", kind="instructions", levels=[1], size=200, split="validation", max_new_tokens=max_new_tokens)
    chats = [prompt_chat(item.prompt) for item in load_suite(suite)[:items]]
    greedy = Sampling(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    engine.generate(chats[:128], greedy)
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    outs = engine.generate(chats, greedy)
    seconds, after = time.monotonic() - started, resource.getrusage(resource.RUSAGE_SELF)
    return {"applied": applied, "seconds": round(seconds, 2), "minor_faults": after.ru_minflt - before.ru_minflt,
            "system_seconds": round(after.ru_stime - before.ru_stime, 2),
            "answers": hashlib.sha256("\n".join(o[0].text for o in outs).encode()).hexdigest()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a packaged model, or tiny for a smoke test")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.model, args.items, args.max_new_tokens)))
        return
    runs: dict[str, list[dict]] = {"glibc": [], "kept": []}
    for rep in range(args.reps):
        for side in runs:
            env = {**os.environ, "PYTHONPATH": str(HERE)}
            env.pop("SELFLOOP_MALLOC", None)
            if side == "glibc":
                env["SELFLOOP_MALLOC"] = "system"
            out = subprocess.run([sys.executable, __file__, "--child", "--model", args.model, "--items", str(args.items),
                                  "--max-new-tokens", str(args.max_new_tokens)],
                                 env=env, capture_output=True, text=True, check=True)
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"{side} rep {rep}: {runs[side][-1]['seconds']} s, {runs[side][-1]['minor_faults']} page faults", flush=True)
    mean = {side: statistics.fmean(r["seconds"] for r in runs[side]) for side in runs}
    report = {
        "bench": "allocator", "seconds": {s: round(v, 2) for s, v in mean.items()},
        "ratio": round(mean["kept"] / mean["glibc"], 3),
        "same_answers": len({r["answers"] for side in runs for r in runs[side]}) == 1,
        "applied": {side: [r["applied"] for r in runs[side]] for side in runs},
        "runs": {side: [{k: r[k] for k in ("seconds", "minor_faults", "system_seconds")} for r in runs[side]] for side in runs},
        "settings": {"model": args.model, "items": args.items, "max_new_tokens": args.max_new_tokens, "batch_size": 128,
                     "suite": "instructions level 1, validation, val", "libc": " ".join(platform.libc_ver()),
                     "python": platform.python_version(), "cpu": platform.machine()},
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()

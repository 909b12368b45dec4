"""Benchmark: where a full demo iteration's wall time goes, phase by phase, and how much of it is
bookkeeping (database transactions, checkpoint writing, orchestration between phases).

    .venv/bin/python bench/iteration.py                          # configs/demo-cpu.yaml, iteration 1 (~8 min)
    .venv/bin/python bench/iteration.py --config configs/tiny.yaml

Phase shares exclude the bookkeeping done inside them, so all shares add up to 1. Ends with one line
of JSON: each phase's share and bookkeeping_share.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from selfloop import phases
from selfloop.config import PHASES, load_config
from selfloop.db import engine as db_engine
from selfloop.db.engine import open_database
from selfloop.loop import open_loop, run_iteration
from selfloop.phases import train as train_phase
from selfloop.runtime import Runtime

spent = {"phase": {}, "bookkeeping": {}}
current = ["outside"]


def _add(kind: str, seconds: float) -> None:
    spent[kind][current[0]] = spent[kind].get(current[0], 0.0) + seconds


def instrument() -> None:
    original_session = db_engine.Database.session

    @contextmanager
    def timed_session(self):  # noqa: ANN001, ANN202
        started = time.perf_counter()
        with original_session(self) as session:
            yield session
        _add("bookkeeping", time.perf_counter() - started)

    db_engine.Database.session = timed_session
    original_save = train_phase.save_adapter

    def timed_save(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        started = time.perf_counter()
        try:
            return original_save(*args, **kwargs)
        finally:
            _add("bookkeeping", time.perf_counter() - started)

    train_phase.save_adapter = timed_save
    for name, fn in list(phases.PHASES.items()):
        def timed(ctx, fn=fn, name=name):  # noqa: ANN001, ANN202
            current[0] = name
            started = time.perf_counter()
            try:
                return fn(ctx)
            finally:
                _add("phase", time.perf_counter() - started)
                current[0] = "outside"
        phases.PHASES[name] = timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("configs/demo-cpu.yaml"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="selfloop-bench-"))
    config = load_config(args.config, [f"loop.state_dir={work}", f"database.url=sqlite:///{work / 'bench.db'}", "loop.max_iterations=1"])
    db = open_database(config.database_url(), init=True)
    open_loop(db, config)
    runtime = Runtime(config)
    runtime.engine()  # model loading is start-up, not part of an iteration
    instrument()
    started = time.perf_counter()
    outcome = run_iteration(db, config, runtime)
    total = time.perf_counter() - started
    runtime.close()
    assert outcome.status == "done", outcome
    inside = sum(spent["phase"].values())
    bookkeeping = sum(spent["bookkeeping"].values()) + (total - inside)  # + orchestration between phases
    shares = {p: round((spent["phase"].get(p, 0.0) - spent["bookkeeping"].get(p, 0.0)) / total, 4) for p in PHASES if p != "promote"}
    shares["promote"] = round((spent["phase"].get("promote", 0.0) - spent["bookkeeping"].get("promote", 0.0)) / total, 4)
    result = {"config": str(args.config), "total_s": round(total, 1), **shares, "bookkeeping_share": round(bookkeeping / total, 4),
              "bookkeeping_s": round(bookkeeping, 2)}
    for name in [*PHASES, "bookkeeping"]:
        seconds = spent["phase"].get(name, 0.0) - spent["bookkeeping"].get(name, 0.0) if name != "bookkeeping" else bookkeeping
        print(f"{name:12s} {seconds:8.1f}s  {seconds / total:7.2%}")
    print(f"{'total':12s} {total:8.1f}s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

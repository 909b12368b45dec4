"""Benchmark: where a full demo iteration's wall time goes, phase by phase, and how much of it is
bookkeeping (database transactions, checkpoint writing, orchestration between phases).

    .venv/bin/python bench/iteration.py                          # configs/demo-cpu.yaml, iteration 1 (~4 min)
    .venv/bin/python bench/iteration.py --config configs/tiny.yaml

Phase shares exclude the bookkeeping done inside them, so all shares add up to 1. Each phase's work is
counted too (prompt and generated tokens, forward-only and trained tokens) and set against a ceiling measured
in the same run (bench/ceiling.py: a large matmul of the model's shapes): its tokens/s and the fraction of the
ceiling's FLOP/s it reaches. Ends with one line of JSON: shares, bookkeeping_share, and per phase
{seconds, generated_tokens_per_s, trained_tokens_per_s, fraction_of_ceiling}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import ceiling  # bench/ceiling.py, next to this file

from selfloop import phases
from selfloop.config import PHASES, load_config
from selfloop.db import engine as db_engine
from selfloop.db.engine import open_database
from selfloop.loop import open_loop, run_iteration
from selfloop.phases import train as train_phase
from selfloop.runtime import Runtime

spent = {"phase": {}, "bookkeeping": {}}
current = ["outside"]
# Work per phase: prompt (prefill) and generated tokens, forward-only tokens, trained tokens.
phase_work: dict[str, dict[str, int]] = {}
lora_params = [0]


def _count(kind: str, n: int) -> None:
    phase = phase_work.setdefault(current[0], {"prompt": 0, "generated": 0, "forward": 0, "trained": 0})
    phase[kind] += n


def count_work(engine) -> None:
    """Count tokens where the work happens: the engine's generate calls and every log-prob forward pass."""
    import torch

    from selfloop.engines import hf as hf_engine
    from selfloop.engines.chat import prompt_ids
    from selfloop.phases import train as train_module
    from selfloop.training import loop as training_loop

    original_generate = engine.generate

    def generate(chats, sampling, **kwargs):
        outs = original_generate(chats, sampling, **kwargs)
        _count("prompt", sum(len(prompt_ids(engine.tokenizer, chat)) for chat in chats))  # one prefill per prompt
        _count("generated", sum(c.num_tokens for row in outs for c in row))
        return outs

    engine.generate = generate
    def counted(original):
        def call(model, prompts, completions, *args):
            tokens = sum(len(p) + len(c) for p, c in zip(prompts, completions))
            _count("trained" if torch.is_grad_enabled() else "forward", tokens)
            return original(model, prompts, completions, *args)
        return call

    hf_engine.completion_logprobs = counted(hf_engine.completion_logprobs)  # scoring (padded)
    training_loop.packed_completion_logprobs = counted(training_loop.packed_completion_logprobs)  # training (packed)
    original_load = train_module.load_trainable

    def load_trainable(*args, **kwargs):
        model = original_load(*args, **kwargs)
        lora_params[0] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return model

    train_module.load_trainable = load_trainable


def _add(kind: str, seconds: float) -> None:
    spent[kind][current[0]] = spent[kind].get(current[0], 0.0) + seconds


def instrument() -> None:
    original_session = db_engine.Database.session

    @contextmanager
    def timed_session(self):
        started = time.perf_counter()
        with original_session(self) as session:
            yield session
        _add("bookkeeping", time.perf_counter() - started)

    db_engine.Database.session = timed_session
    original_save = train_phase.save_adapter

    def timed_save(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original_save(*args, **kwargs)
        finally:
            _add("bookkeeping", time.perf_counter() - started)

    train_phase.save_adapter = timed_save
    for name, fn in list(phases.PHASES.items()):
        def timed(ctx, fn=fn, name=name):
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
    engine = runtime.engine()  # model loading is start-up, not part of an iteration
    params = ceiling.count_parameters(engine.base)
    peak = ceiling.matmul_peak_flops(runtime.model.path, next(engine.base.parameters()).dtype)
    instrument()
    count_work(engine)
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
    result["ceiling"] = {"matmul_flops_per_s": round(peak), "params": params, "lora_params": lora_params[0],
                         "how": "best of 20 float32 matmuls, 2048 tokens x hidden @ hidden x intermediate"}
    result["phases"] = {}
    for name in [*PHASES, "bookkeeping"]:
        seconds = spent["phase"].get(name, 0.0) - spent["bookkeeping"].get(name, 0.0) if name != "bookkeeping" else bookkeeping
        w = phase_work.get(name)
        line = f"{name:12s} {seconds:8.1f}s  {seconds / total:7.2%}"
        if w and seconds > 0:
            flops = (ceiling.generation_flops(params, w["prompt"], w["generated"]) + ceiling.forward_flops(params, w["forward"])
                     + ceiling.training_flops(params, lora_params[0], w["trained"]))
            result["phases"][name] = {
                "seconds": round(seconds, 2), **{f"{k}_tokens": v for k, v in w.items()},
                "generated_tokens_per_s": round(w["generated"] / seconds, 1), "trained_tokens_per_s": round(w["trained"] / seconds, 1),
                "fraction_of_ceiling": ceiling.share(flops, seconds, peak)}
            line += f"  {result['phases'][name]['fraction_of_ceiling']:8.2%} of the matmul ceiling"
        print(line)
    print(f"{'total':12s} {total:8.1f}s   ceiling {peak / 1e9:.1f} GFLOP/s, {params / 1e6:.1f}M parameters")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

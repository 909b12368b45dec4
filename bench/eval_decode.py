"""Benchmark: where a held-out evaluation's greedy decoding spends its time (the instruction lab's largest phase).

    .venv/bin/python bench/eval_decode.py                  # 128 validation items, 64 tokens (about 2 minutes)
    .venv/bin/python bench/eval_decode.py --model tiny --items 8 --max-new-tokens 8      # a smoke test

One batch of the instruction lab's `val` suite (level 1, validation split, SmolLM2's own chat template), decoded
greedily by the hf engine as the evaluate phase does, once to warm up and time, once under torch's profiler. Prints
one JSON line: the decode's seconds and generated tokens, each operator's share of the profiled CPU time (the top
ones, then the rest), and the matrix products' rate (FLOP/s, from the profiler's count) beside the best rate of one
large float32 matmul of the model's shapes measured in the same run (bench/ceiling.py): how far the decode is from
the arithmetic this CPU can do, and what the rest could at most give back.
"""

from __future__ import annotations

import argparse
import json
import time

import ceiling  # bench/ceiling.py, next to this file
import eval_batch  # bench/eval_batch.py: the batch and its settings
from torch.profiler import ProfilerActivity, profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    eval_batch.add_arguments(parser)
    parser.add_argument("--top", type=int, default=8, help="operators listed by name; the rest are summed")
    args = parser.parse_args()
    batch = eval_batch.eval_batch(args)
    engine, chats, greedy, model_dir = batch.engine, batch.chats, batch.greedy, batch.model_dir
    started = time.monotonic()
    outs = engine.generate(chats, greedy)
    seconds = time.monotonic() - started
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        again = engine.generate(chats, greedy)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    share = {e.key: round(e.self_cpu_time_total / total, 4) for e in ops[: args.top]}
    share["rest"] = round(1 - sum(share.values()), 4)
    mm = [e for e in ops if e.key in ("aten::mm", "aten::addmm", "aten::bmm")]
    mm_seconds = sum(e.self_cpu_time_total for e in mm) / 1e6
    mm_flops = sum(e.flops for e in mm)
    peak = ceiling.matmul_peak_flops(model_dir)
    report = {
        "bench": "eval_decode", "items": len(chats), "seconds": round(seconds, 1),
        "generated_tokens": sum(o[0].num_tokens for o in outs),
        "at_length": sum(o[0].finish_reason == "length" for o in outs),
        "same_answers_profiled": [o[0].text for o in outs] == [o[0].text for o in again],
        "profiled_seconds": round(total / 1e6, 1), "share": share,
        "matmul": {"seconds": round(mm_seconds, 1), "gflop_per_s": round(mm_flops / mm_seconds / 1e9, 1) if mm_seconds else None,
                   "ceiling_gflop_per_s": round(peak / 1e9, 1),
                   "fraction_of_ceiling": round(mm_flops / mm_seconds / peak, 3) if mm_seconds else None},
        "settings": batch.settings,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()

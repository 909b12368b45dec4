"""Benchmark: what torch.compile buys an evaluation's greedy decoding on this CPU, if anything.

    .venv/bin/python bench/compile_decode.py               # 128 validation items, 64 tokens (about 10 minutes)
    .venv/bin/python bench/compile_decode.py --model tiny --items 2 --max-new-tokens 3   # a smoke test

The decode of bench/eval_decode.py (one batch of the instruction lab's `val` suite, the hf engine as the evaluate
phase calls it), first eager, twice, then with the model's forward under `torch.compile` (inductor, dynamic shapes:
the batch shrinks as rows finish and the cache grows every step): the first compiled run, compilation included, and
a second. Prints one JSON line: the seconds of each side (eager: the faster of two), the ratio compiled / eager
(the second compiled run), the compilation's seconds (the first run's excess, which every lab piece, a new process,
would pay again), and how many answers are the same text as eager's: fused kernels sum in another order, so greedy
answers may flip, and a lab would have to run again before using it.
"""

from __future__ import annotations

import argparse
import json
import time

import eval_batch  # bench/eval_batch.py: the batch and its settings
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    eval_batch.add_arguments(parser)
    args = parser.parse_args()
    batch = eval_batch.eval_batch(args)
    engine, chats, greedy = batch.engine, batch.chats, batch.greedy

    def decode() -> tuple[float, list[str]]:
        started = time.monotonic()
        outs = engine.generate(chats, greedy)
        return time.monotonic() - started, [o[0].text for o in outs]

    eager_runs = [decode() for _ in range(2)]
    eager_seconds, eager_texts = min(t for t, _ in eager_runs), eager_runs[0][1]
    engine.base.forward = torch.compile(engine.base.forward, dynamic=True)  # what `model(...)` calls from here on
    first_seconds, _ = decode()
    compiled_seconds, compiled_texts = decode()
    report = {
        "bench": "compile_decode", "items": len(chats),
        "eager_seconds": round(eager_seconds, 3), "eager_runs": [round(t, 3) for t, _ in eager_runs],
        "compiled_first_run_seconds": round(first_seconds, 3), "compiled_seconds": round(compiled_seconds, 3),
        "ratio": round(compiled_seconds / eager_seconds, 3),
        "compilation_seconds": round(first_seconds - compiled_seconds, 3),  # paid once per process: per lab piece
        "same_text_as_eager": sum(a == b for a, b in zip(eager_texts, compiled_texts, strict=True)),
        "settings": {**batch.settings, "compile": {"backend": "inductor", "dynamic": True, "mode": "default"}},
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()

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
import platform
import time

import torch

from selfloop.config import SuiteConfig
from selfloop.config.base import default_cache_dir
from selfloop.engines.base import Sampling
from selfloop.engines.chat import prompt_chat
from selfloop.engines.hf import HFEngine
from selfloop.evals.suites import load_suite
from selfloop.models.resolve import resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a packaged model, or tiny for a smoke test")
    parser.add_argument("--items", type=int, default=128, help="items decoded together (the lab's engine batch: 128)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    model_dir = resolve_model(args.model, default_cache_dir()).path
    engine = HFEngine(model_dir, batch_size=args.items)
    suite = SuiteConfig(name="val", kind="instructions", levels=[1], size=200, split="validation",
                        max_new_tokens=args.max_new_tokens)
    chats = [prompt_chat(item.prompt) for item in load_suite(suite)[: args.items]]
    greedy = Sampling(n=1, temperature=0.0, max_new_tokens=args.max_new_tokens)

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
        "settings": {"model": args.model, "suite": "instructions level 1, validation, val", "max_new_tokens": args.max_new_tokens,
                     "batch_size": args.items, "dtype": str(next(engine.base.parameters()).dtype),
                     "compile": {"backend": "inductor", "dynamic": True, "mode": "default"},
                     "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.machine()},
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()

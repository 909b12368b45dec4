"""The decode both bench/eval_decode.py and bench/compile_decode.py time: one batch of the instruction lab's `val`
suite (level 1, validation split, SmolLM2's own chat template), greedy, as the evaluate phase has the hf engine
decode it; their shared command-line options and the settings their JSON reports."""

from __future__ import annotations

import argparse
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from selfloop.config import SuiteConfig
from selfloop.config.base import default_cache_dir
from selfloop.engines.base import Chat, Sampling
from selfloop.engines.chat import prompt_chat
from selfloop.engines.hf import HFEngine
from selfloop.evals.suites import load_suite
from selfloop.models.resolve import resolve_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a packaged model, or tiny for a smoke test")
    parser.add_argument("--items", type=int, default=128, help="items decoded together (the lab's engine batch: 128)")
    parser.add_argument("--max-new-tokens", type=int, default=64)


@dataclass
class EvalBatch:
    model_dir: Path
    engine: HFEngine
    chats: list[Chat]
    greedy: Sampling
    settings: dict[str, Any]  # what the JSON reports of the decode's set-up


def eval_batch(args: argparse.Namespace) -> EvalBatch:
    model_dir = resolve_model(args.model, default_cache_dir()).path
    suite = SuiteConfig(name="val", kind="instructions", levels=[1], size=200, split="validation",
                        max_new_tokens=args.max_new_tokens)
    engine = HFEngine(model_dir, batch_size=args.items)
    settings = {"model": args.model, "suite": "instructions level 1, validation, val", "max_new_tokens": args.max_new_tokens,
                "batch_size": args.items, "dtype": str(next(engine.base.parameters()).dtype),
                "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.machine()}
    return EvalBatch(model_dir, engine, [prompt_chat(item.prompt) for item in load_suite(suite)[: args.items]],
                     Sampling(n=1, temperature=0.0, max_new_tokens=args.max_new_tokens), settings)

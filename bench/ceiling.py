"""A stated ceiling for this machine and model, and the share of it a phase reaches.

Ceiling: the float32 (or the model's dtype) FLOP/s of one large matmul of the model's own shapes
(tokens x hidden @ hidden x intermediate, the MLP's up projection), best of several runs, measured in the
same process as the phase. Work, per token, with N the model's parameters (tied embeddings once: they are
the lm_head's weight):
- generation: 2N per prompt token (prefill) and 2N per generated token (decode), attention's own FLOPs left out
  (contexts here are a few hundred tokens);
- a forward pass without gradients (reference log-probs, scoring): 2N per token;
- a training forward and backward with the base frozen (LoRA): 4N per token (the backward computes activation
  gradients, 2N, but no weight gradients for frozen weights), plus 6 per LoRA parameter per token.
Decoding one token at a time is memory-bound, so generation stays far below a matmul ceiling; the fraction says
how far, which is the point.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch


def model_shapes(model_dir: Path) -> tuple[int, int]:
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return int(config["hidden_size"]), int(config.get("intermediate_size") or 4 * config["hidden_size"])


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def matmul_peak_flops(model_dir: Path, dtype: torch.dtype = torch.float32, tokens: int = 2048, repeats: int = 20) -> float:
    """Best FLOP/s of tokens x hidden @ hidden x intermediate on this machine's default device (CPU here)."""
    hidden, intermediate = model_shapes(model_dir)
    a = torch.randn(tokens, hidden, dtype=dtype)
    b = torch.randn(hidden, intermediate, dtype=dtype)
    for _ in range(3):  # warm-up: thread pool, allocator
        a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2.0 * tokens * hidden * intermediate / best


def generation_flops(params: int, prompt_tokens: int, generated_tokens: int) -> float:
    return 2.0 * params * (prompt_tokens + generated_tokens)


def forward_flops(params: int, tokens: int) -> float:
    return 2.0 * params * tokens


def training_flops(params: int, lora_params: int, tokens: int) -> float:
    return (4.0 * params + 6.0 * lora_params) * tokens


def share(flops: float, seconds: float, peak: float) -> float:
    return round(flops / seconds / peak, 5) if seconds > 0 else 0.0

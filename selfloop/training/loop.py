"""The LoRA training loop shared by every algorithm.

peft LoRA on the base model (or continuing the iteration's starting adapter), AdamW, a scheduler
from transformers, gradient accumulation and clipping, loss only on completion tokens (log-probs
are gathered at completion positions only), optional gradient checkpointing. Each algorithm module
supplies `batch_loss(items, policy, cfg)`; the loop knows nothing else about it.

Reference log-probs come from the same model before its first step (the iteration's starting
policy), so no second copy of the model is held. A run is a pure function of (items, seed): an
interrupted run is simply run again from its start.

Data parallel (`accelerator` given, N processes): every process draws the same batches and takes its
shard of each. Every algorithm's loss is a mean over the batch's items, so each process weights its
shard's mean by its share of the batch; DDP averages gradients over processes, which gives the
full batch's gradient, and the step's loss and metrics are summed over processes the same way.
N processes thus take the same steps as one process with the same batch_size, up to floating-point noise.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, cast

import torch

from selfloop.adapters import Adapter, verify_checkpoint
from selfloop.algorithms.items import LogpFn, TrainItem, known, lacks_reference, means
from selfloop.errors import Interrupted
from selfloop.models.loading import load_causal_lm
from selfloop.models.logprobs import packed_completion_entropies, packed_completion_logprobs
from selfloop.progress import Progress

if TYPE_CHECKING:
    from accelerate import Accelerator
    from peft import PeftModel
    from pydantic import BaseModel

    from selfloop.config import TrainConfig
    from selfloop.config.sections import LoraConfig as LoraSection


def default_steps(n_examples: int, train: TrainConfig) -> int:
    """Optimizer steps for `epochs` passes over the examples, capped by max_steps."""
    if n_examples == 0:
        return 0
    steps = train.epochs * math.ceil(n_examples / (train.batch_size * train.grad_accum))
    return min(steps, train.max_steps) if train.max_steps else steps


def step_count(algo_cfg: BaseModel, n_examples: int, train: TrainConfig) -> int:
    """Optimizer steps of a run: epochs over the examples, unless the algorithm whose options these are trains a
    fixed number of steps (its spec's `fixed_steps`; RLSC: a few)."""
    from selfloop.algorithms import specs

    fixed = next((spec.fixed_steps for spec in specs().values() if type(algo_cfg) is spec.options), None)
    if fixed is None:
        return default_steps(n_examples, train)
    return getattr(algo_cfg, fixed) if n_examples else 0


@dataclass
class StepRecord:
    step: int
    loss: float
    learning_rate: float
    grad_norm: float
    tokens_per_s: float
    metrics: dict[str, float] = field(default_factory=dict)


def load_trainable(model_dir: Path, init: Adapter | None, lora: LoraSection, device: torch.device, dtype: torch.dtype,
                   gradient_checkpointing: bool = False) -> PeftModel:
    """The base model with a trainable LoRA adapter: `init`'s weights to continue from, or a fresh one (its
    updates added by one addmm per layer: selfloop.models.fused_lora)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from selfloop.models.fused_lora import use_addmm_updates

    base = load_causal_lm(model_dir, device, dtype)
    if init is not None:
        verify_checkpoint(init.path, init.sha256)
        model = PeftModel.from_pretrained(base, str(init.path), is_trainable=True)
        # The file names the configured base (a hub id, a packaged name); this process has it at model_dir,
        # where peft looks when it saves (vocabulary checks), so no hub lookup happens.
        model.peft_config["default"].base_model_name_or_path = str(model_dir)
    else:
        model = get_peft_model(base, LoraConfig(
            r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        ))
    use_addmm_updates(model)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model


class _Policy:
    """The policy's per-token log-probs of completions (LogpFn); `with_hidden` also gives each sequence's
    last-token hidden state (an algorithm that contrasts representations: CoIN), `entropies` each completion
    position's next-token entropy (EM-FT)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __call__(self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], /) -> list[torch.Tensor]:
        return cast(list[torch.Tensor], packed_completion_logprobs(self.model, prompts, completions))

    def with_hidden(self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], /
                    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        return cast(tuple[list[torch.Tensor], torch.Tensor],
                    packed_completion_logprobs(self.model, prompts, completions, last_hidden=True))

    def entropies(self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], /,
                  temperature: float = 1.0) -> list[torch.Tensor]:
        return packed_completion_entropies(self.model, prompts, completions, temperature)


def policy_logps(model: torch.nn.Module) -> LogpFn:
    return _Policy(model)


@torch.no_grad()
def reference_logps(model: torch.nn.Module, items: list[TrainItem], batch_size: int) -> None:
    """Fill the reference log-probs of each item that lacks them (sum for the completion and the rejected
    one, per token for the completion) from `model` as it is now: the iteration's starting policy."""
    model.eval()
    items = [it for it in items if lacks_reference(it)]
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        rows = packed_completion_logprobs(model, [it.prompt for it in chunk], [it.completion for it in chunk])
        for it, lp in zip(chunk, rows):
            it.ref_logp, it.ref_token_logps = float(lp.sum()), lp.tolist()
        pairs = [it for it in chunk if it.rejected is not None]
        if pairs:
            rows = packed_completion_logprobs(model, [it.prompt for it in pairs], [known(it.rejected, "rejected") for it in pairs])
            for it, lp in zip(pairs, rows):
                it.ref_rejected_logp = float(lp.sum())


def mixed_loss(algorithm: ModuleType, items: list[TrainItem], policy: LogpFn, algo_cfg: BaseModel) -> tuple[torch.Tensor, dict[str, float]]:
    """The algorithm's loss over its own items and, for judge (EFT) items, the weighted mean token NLL of
    the target; together a mean over all the batch's items, as the data-parallel weighting expects."""
    judge = [it for it in items if it.judge]
    if not judge:
        return algorithm.batch_loss(items, policy, algo_cfg)
    own = [it for it in items if not it.judge]
    token_logps = policy([it.prompt for it in judge], [it.completion for it in judge])
    weights = torch.tensor([it.weight or 1.0 for it in judge], dtype=torch.float32, device=token_logps[0].device)
    nll = -means(token_logps) * weights
    total, metrics = nll.sum(), {"eft_loss": nll.sum().item() / len(items)}
    if own:
        loss, own_metrics = algorithm.batch_loss(own, policy, algo_cfg)
        total = total + loss * len(own)
        metrics |= own_metrics
    return total / len(items), metrics


def _batches(n: int, size: int, rng: random.Random) -> Iterator[list[int]]:
    """Index batches over shuffled epochs, forever (the step count decides when to stop)."""
    while True:
        order = list(range(n))
        rng.shuffle(order)
        for start in range(0, n, size):
            yield order[start : start + size]


def _shard(batch: list[TrainItem], rank: int, world: int) -> tuple[list[TrainItem], float]:
    """This process's contiguous shard of a batch, and its share of the batch. A process whose shard is
    empty (a short last batch) runs one item at share 0, so every process takes part in the gradient sync."""
    size, extra = divmod(len(batch), world)
    start = rank * size + min(rank, extra)
    shard = batch[start : start + size + (rank < extra)]
    return (shard, len(shard) / len(batch)) if shard else (batch[:1], 0.0)


def _sum_over_processes(accelerator: Accelerator, loss: float, tokens: int, totals: dict[str, float]
                        ) -> tuple[float, int, dict[str, float]]:
    keys = sorted(totals)
    values = torch.tensor([loss, float(tokens), *(totals[k] for k in keys)], dtype=torch.float64, device=accelerator.device)
    values = accelerator.reduce(values, reduction="sum").tolist()
    return values[0], int(values[1]), dict(zip(keys, values[2:]))


def train(
    model: torch.nn.Module,
    items: list[TrainItem],
    algorithm: ModuleType,
    algo_cfg: BaseModel,
    train_cfg: TrainConfig,
    *,
    seed: int,
    on_step: Callable[[StepRecord], None] = lambda r: None,
    on_progress: Callable[[int, int], None] | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
    accelerator: Accelerator | None = None,
) -> list[StepRecord]:
    """Train `model` (DDP-wrapped when `accelerator` is given) on `items`; on_step gets each step's record
    (on every process; a data-parallel caller records only the main process's)."""
    from contextlib import nullcontext

    from transformers import get_scheduler

    world = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0

    steps = step_count(algo_cfg, len(items), train_cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train_cfg.learning_rate, weight_decay=train_cfg.weight_decay)
    scheduler = get_scheduler(train_cfg.scheduler, optimizer, num_warmup_steps=int(train_cfg.warmup_ratio * steps),
                              num_training_steps=max(1, steps))
    batches = _batches(len(items), train_cfg.batch_size, random.Random(seed))
    policy = policy_logps(model)
    model.train()
    records = []
    with Progress("train", steps, "step", on_update=on_progress) as progress:
        for step in range(steps):
            started, tokens = time.perf_counter(), 0
            totals: dict[str, float] = {}
            loss_sum = 0.0
            for micro in range(train_cfg.grad_accum):
                batch = [items[i] for i in next(batches)]
                shard, share = _shard(batch, rank, world)
                tokens += sum(len(it.prompt) + len(it.completion) + (len(it.prompt) + len(it.rejected) if it.rejected else 0)
                              + sum(len(it.prompt) + len(c) for c in (it.candidates or [])[1:])  # a ranking's others
                              for it in (shard if share else []))
                last = micro + 1 == train_cfg.grad_accum
                # DDP averages gradients over processes only on the micro-step that ends the optimizer step.
                with nullcontext() if accelerator is None or last else accelerator.no_sync(model):
                    loss, metrics = mixed_loss(algorithm, shard, policy, algo_cfg)
                    (loss * (share * world) / train_cfg.grad_accum).backward()
                loss_sum += share * loss.item() / train_cfg.grad_accum
                for k, v in metrics.items():
                    totals[k] = totals.get(k, 0.0) + share * v / train_cfg.grad_accum
            if accelerator is not None:  # the step's loss and metrics over the whole batch, and its tokens
                loss_sum, tokens, totals = _sum_over_processes(accelerator, loss_sum, tokens, totals)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, train_cfg.max_grad_norm).item()
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            record = StepRecord(step, loss_sum, lr, grad_norm, tokens / (time.perf_counter() - started), totals)
            records.append(record)
            on_step(record)
            progress.update(1, tokens)
            if stop_requested() and step + 1 < steps:
                raise Interrupted("stop requested during training")
    model.eval()
    return records

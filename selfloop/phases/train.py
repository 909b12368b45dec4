"""Phase train: LoRA training on the iteration's examples, then an atomic checkpoint.

A re-run (after a crash or a stop) starts training over with the same seed: its partial train_steps
rows are deleted when the new attempt is marked running (`loop._start_phase`). Reference log-probs come from
the rollout where the engine recorded them for samples of the starting policy (`samples.policy_token_logprobs`),
else from a forward pass; once known they are kept on the example rows. The new checkpoint's row, the iteration's
output checkpoint and the done mark are one transaction, written only after the checkpoint directory is complete.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from loguru import logger

from selfloop.algorithms import spec, trainer
from selfloop.algorithms.items import TrainItem, fit, known, lacks_reference
from selfloop.db.queries import add_event, metrics_of, set_metric
from selfloop.db.training import add_step, keep_reference, record_checkpoint, training_rows
from selfloop.engines.chat import completion_ids, prompt_chat, prompt_ids, user_chat
from selfloop.judging.eft import ALGORITHM as EFT
from selfloop.judging.judge import judge_chat, load_template
from selfloop.models.loading import load_tokenizer, pick_device, pick_dtype
from selfloop.models.packaged import shareable_base
from selfloop.phases.context import PhaseContext
from selfloop.training.checkpoint import save_adapter
from selfloop.training.loop import StepRecord, default_steps, load_trainable, reference_logps, train

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from selfloop.adapters import Adapter
    from selfloop.config import TrainConfig
    from selfloop.db.models import Sample
    from selfloop.training.checkpoint import SavedCheckpoint
    from selfloop.training.loop import StepRecord


def _items(ctx: PhaseContext, tokenizer: PreTrainedTokenizerBase, init: Adapter | None) -> tuple[list[TrainItem], list[TrainItem]]:
    """The iteration's examples as training items, and those whose reference the rollout supplied just now."""
    system = ctx.config.generation.system_prompt
    end_id = tokenizer.eos_token_id
    with ctx.db.session() as session:
        rows = training_rows(session, ctx.iteration_id)
    examples, ranked, samples, prompts = rows.examples, rows.candidates, rows.samples, rows.prompts
    items, from_rollout = [], []
    contract = spec(ctx.config.train.algorithm)
    for e in examples:
        if e.algorithm == EFT:  # the judge's prompt about the sample; its own agreeing verdict as the target
            template = load_template(ctx.config.judge.llm_judge.template)
            chat = judge_chat(template, prompts[e.prompt_id], samples[known(e.sample_id, "judged sample")].text)
            items.append(fit(TrainItem(example_id=e.id, prompt_id=e.prompt_id, prompt=prompt_ids(tokenizer, chat),
                                       completion=completion_ids(tokenizer, known(e.text, "verdict"), end_id), reward=e.reward,
                                       weight=e.weight, judge=True), ctx.config.train.max_length))
            continue
        completion = (samples[e.sample_id].token_ids if e.sample_id is not None
                      else completion_ids(tokenizer, known(e.text, "text"), end_id))
        item = TrainItem(
            example_id=e.id, prompt_id=e.prompt_id,
            prompt=prompt_ids(tokenizer, prompt_chat(prompts[e.prompt_id], system, rows.conversations.get(e.prompt_id))),
            completion=list(completion), rejected=list(samples[e.rejected_sample_id].token_ids) if e.rejected_sample_id else None,
            reward=e.reward, weight=e.weight, ref_logp=e.ref_logp, ref_rejected_logp=e.ref_rejected_logp,
            ref_token_logps=e.ref_token_logps, sampling_logp=e.sampling_logp,
            candidates=[list(samples[c.sample_id].token_ids) for c in ranked[e.id]] if e.id in ranked else None,
            candidate_scores=[c.score for c in ranked[e.id]] if e.id in ranked else None,
        )
        if contract.data is not None and e.data is not None:  # the algorithm's own data, and its second prompts
            item.data = contract.data.model_validate(e.data)
            item.prompts = {name: prompt_ids(tokenizer, user_chat(text, system)) for name in contract.prompts
                            if (text := getattr(item.data, name)) is not None}
        prompt_length = len(item.prompt)
        items.append(fit(item, ctx.config.train.max_length))
        if (spec(ctx.config.train.algorithm).needs_reference and lacks_reference(item) and len(item.prompt) == prompt_length
                and _reference_from_rollout(item, samples.get(e.sample_id) if e.sample_id is not None else None,
                                            samples.get(e.rejected_sample_id) if e.rejected_sample_id is not None else None,
                                            init.checkpoint_id if init else None)):
            from_rollout.append(item)
    return items, from_rollout


def _keep_reference(ctx: PhaseContext, items: list[TrainItem]) -> None:
    with ctx.db.session() as session:
        keep_reference(session, items)


def _reference_from_rollout(item: TrainItem, chosen: Sample | None, rejected: Sample | None, policy_id: int | None) -> bool:
    """Set the reference log-probs as the engine recorded them while sampling, when the samples came from the
    training's starting policy (the reference) with their whole context: no forward pass is needed.
    Whether it could."""
    def recorded(sample: Sample | None, length: int) -> list[float] | None:
        if sample is None or sample.policy_token_logprobs is None or sample.policy_checkpoint_id != policy_id:
            return None
        return list(sample.policy_token_logprobs[:length]) if len(sample.policy_token_logprobs) >= length else None

    tokens = recorded(chosen, len(item.completion))
    other = recorded(rejected, len(item.rejected)) if item.rejected is not None else []
    if tokens is None or other is None:
        return False
    item.ref_token_logps, item.ref_logp = tokens, float(sum(tokens))
    if item.rejected is not None:
        item.ref_rejected_logp = float(sum(other))
    return True


def run(ctx: PhaseContext) -> None:
    cfg = ctx.config.train
    contract = spec(cfg.algorithm)
    tokenizer = load_tokenizer(ctx.runtime.model.path, padding_side="left")
    init = None if contract.restart_from_base else ctx.policy
    items, from_rollout = _items(ctx, tokenizer, init)
    if not items:
        with ctx.db.session() as session:
            add_event(session, ctx.loop_id, ctx.iteration_id, "train.skipped", "no training examples: no checkpoint this iteration",
                      level="warning")
            ctx.mark_done(session)
        return
    ctx.runtime.release_accelerator()

    def store_reference(items: list[TrainItem]) -> None:  # kept on the example rows: a re-run reuses them
        _keep_reference(ctx, items)
        ctx.failpoint("before_steps")

    # References taken from the rollout are kept too, so the example rows always say what training used.
    _keep_reference(ctx, from_rollout)

    def on_step(record: StepRecord) -> None:
        with ctx.db.session() as session:
            add_step(session, ctx.iteration_id, record)
        ctx.failpoint("after_step")

    if ctx.config.curate.same_steps:
        cfg = _same_steps(ctx, cfg, sum(1 for it in items if not it.judge))
    path = ctx.config.state_dir() / "checkpoints" / ctx.config.loop.name / f"iteration-{ctx.number:04d}"
    extra = {"loop": ctx.config.loop.name, "iteration": ctx.number, "algorithm": cfg.algorithm}
    needs_reference = contract.needs_reference and any(lacks_reference(it) for it in items)
    if cfg.processes > 1:
        records, saved = _train_on_processes(ctx, cfg, items, init, needs_reference, path, extra,
                                             store_reference, on_step)
    else:
        records, saved = _train_here(ctx, cfg, items, init, needs_reference, path, extra,
                                     store_reference, on_step)
    with ctx.db.session() as session:
        record_checkpoint(session, ctx.iteration_id, path=ctx.config.stored_checkpoint(saved.path), sha256=saved.sha256,
                          base_model=ctx.config.model.base, parent_checkpoint_id=init.checkpoint_id if init else None,
                          size_bytes=saved.size_bytes)
        if records:
            set_metric(session, ctx.iteration_id, "train.first_loss", records[0].loss)
            set_metric(session, ctx.iteration_id, "train.last_loss", records[-1].loss)
            set_metric(session, ctx.iteration_id, "train.steps", len(records))
        ctx.mark_done(session)
    logger.info("trained {} steps on {} examples; checkpoint {}", len(records), len(items), saved.path)


def _same_steps(ctx: PhaseContext, cfg: TrainConfig, kept: int) -> TrainConfig:
    """LIMA as a policy (curate.same_steps): the optimizer steps the uncurated examples would have taken, with the
    kept ones repeated over as many more epochs as that needs."""
    with ctx.db.session() as session:
        uncurated = int(metrics_of(session, ctx.iteration_id, "select.uncurated_examples").get(
            "select.uncurated_examples", kept))
    if kept == 0 or uncurated <= kept:
        return cfg
    steps = default_steps(uncurated, cfg)
    return cfg.model_copy(update={"epochs": cfg.epochs * math.ceil(uncurated / kept), "max_steps": steps})


def _train_here(ctx: PhaseContext, cfg: TrainConfig, items: list[TrainItem], init: Adapter | None, needs_reference: bool, path: Path,
                extra: dict[str, Any], store_reference: Callable[[list[TrainItem]], None],
                on_step: Callable[[StepRecord], None]) -> tuple[list[StepRecord], SavedCheckpoint]:
    """Train in this process, on engine.device."""
    device = pick_device(ctx.config.engine.device)
    torch.manual_seed(ctx.seed("train", "init"))
    model = load_trainable(ctx.runtime.model.path, init, cfg.lora, device, pick_dtype(ctx.config.model.dtype, device),
                           cfg.gradient_checkpointing)
    try:
        if needs_reference:
            reference_logps(model, items, cfg.batch_size)
            store_reference(items)
        else:
            ctx.failpoint("before_steps")
        records = train(model, items, trainer(cfg.algorithm), cfg.options(), cfg, seed=ctx.seed("train", "order"),
                        on_step=on_step, on_progress=lambda done, total: ctx.set_progress(done, total, "training steps"),
                        stop_requested=ctx.stop_requested)
        saved = save_adapter(model, path, base_model=shareable_base(ctx.config.model.base), extra=extra)
        ctx.failpoint("after_save")
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return records, saved


def _train_on_processes(ctx: PhaseContext, cfg: TrainConfig, items: list[TrainItem], init: Adapter | None,
                        needs_reference: bool, path: Path, extra: dict[str, Any], store_reference: Callable[[list[TrainItem]], None],
                        on_step: Callable[[StepRecord], None]) -> tuple[list[StepRecord], SavedCheckpoint]:
    """Train on train.processes data-parallel worker processes (see selfloop.training.distributed)."""
    from selfloop.adapters import verify_checkpoint
    from selfloop.training.checkpoint import SavedCheckpoint
    from selfloop.training.distributed import run_workers
    from selfloop.training.loop import step_count

    device = pick_device(ctx.config.engine.device)
    total = step_count(cfg.options(), len(items), cfg)
    records: list[StepRecord] = []

    def step(event: dict) -> None:
        record = StepRecord(**event)
        records.append(record)
        on_step(record)
        ctx.set_progress(len(records), total, "training steps")

    if not needs_reference:
        ctx.failpoint("before_steps")
    job = {"model_dir": str(ctx.runtime.model.path), "device": device.type, "dtype": ctx.config.model.dtype,
           "train": cfg.model_dump(mode="json"), "needs_reference": needs_reference,
           "init": {"checkpoint_id": init.checkpoint_id, "path": str(init.path), "sha256": init.sha256} if init else None,
           "seed_init": ctx.seed("train", "init"), "seed_order": ctx.seed("train", "order"),
           "out": str(path), "base_model": shareable_base(ctx.config.model.base), "extra": extra}
    event = run_workers(workdir=path.parent, processes=cfg.processes, device=device.type, job=job, items=items,
                        on_reference=store_reference, on_step=step, stop_requested=ctx.stop_requested)
    verify_checkpoint(Path(event["path"]), event["sha256"])  # what rank 0 wrote is complete and unaltered
    ctx.failpoint("after_save")
    return records, SavedCheckpoint(Path(event["path"]), event["sha256"], event["size_bytes"])

"""Phase train: LoRA training on the iteration's examples, then an atomic checkpoint.

A re-run (after a crash or a stop) starts training over with the same seed: its partial train_steps
rows are deleted first. Reference log-probs, once computed, are kept on the example rows. The new
checkpoint's row, the iteration's output checkpoint and the done mark are one transaction, written
only after the checkpoint directory is complete.
"""

from __future__ import annotations

import gc

import torch
from loguru import logger
from sqlalchemy import delete, select, update

from selfloop.algorithms import ALGORITHMS
from selfloop.db.models import Checkpoint, Example, Iteration, Prompt, Sample, TrainStep
from selfloop.db.queries import add_event, set_metric
from selfloop.engines.chat import completion_ids, prompt_ids, user_chat
from selfloop.models.loading import load_tokenizer, pick_device, pick_dtype
from selfloop.phases.context import PhaseContext
from selfloop.training.checkpoint import save_adapter
from selfloop.training.items import TrainItem, fit
from selfloop.training.loop import StepRecord, load_trainable, reference_logps, train


def _items(ctx: PhaseContext, tokenizer) -> list[TrainItem]:  # noqa: ANN001
    system = ctx.config.generation.system_prompt
    end_id = tokenizer.eos_token_id
    with ctx.db.session() as session:
        examples = session.scalars(
            select(Example).where(Example.iteration_id == ctx.iteration_id).order_by(Example.item_index)
        ).all()
        sample_ids = {e.sample_id for e in examples} | {e.rejected_sample_id for e in examples}
        tokens = dict(session.execute(select(Sample.id, Sample.token_ids).where(Sample.id.in_(sample_ids - {None}))).all())
        prompts = dict(session.execute(
            select(Prompt.id, Prompt.text).where(Prompt.id.in_({e.prompt_id for e in examples}))
        ).all())
    items = []
    for e in examples:
        completion = tokens[e.sample_id] if e.sample_id is not None else completion_ids(tokenizer, e.text, end_id)
        items.append(fit(TrainItem(
            example_id=e.id, prompt_id=e.prompt_id, prompt=prompt_ids(tokenizer, user_chat(prompts[e.prompt_id], system)),
            completion=list(completion), rejected=list(tokens[e.rejected_sample_id]) if e.rejected_sample_id else None,
            reward=e.reward, weight=e.weight, ref_logp=e.ref_logp, ref_rejected_logp=e.ref_rejected_logp,
            ref_token_logps=e.ref_token_logps,
        ), ctx.config.train.max_length))
    return items


def run(ctx: PhaseContext) -> None:
    cfg = ctx.config.train
    module = ALGORITHMS[cfg.algorithm]
    algo_cfg = getattr(cfg, cfg.algorithm)
    with ctx.db.session() as session:
        session.execute(delete(TrainStep).where(TrainStep.iteration_id == ctx.iteration_id))  # a re-run starts over
    tokenizer = load_tokenizer(ctx.runtime.model.path, padding_side="left")
    items = _items(ctx, tokenizer)
    if not items:
        with ctx.db.session() as session:
            add_event(session, ctx.loop_id, ctx.iteration_id, "train.skipped", "no training examples: no checkpoint this iteration", level="warning")
            ctx.mark_done(session)
        return
    init = None if module.RESTART_FROM_BASE else ctx.policy
    ctx.runtime.release_accelerator()
    device = pick_device(ctx.config.engine.device)
    torch.manual_seed(ctx.seed("train", "init"))
    model = load_trainable(ctx.runtime.model.path, init, cfg.lora, device, pick_dtype(ctx.config.model.dtype, device),
                           cfg.gradient_checkpointing)
    pad_id = tokenizer.pad_token_id
    try:
        if module.NEEDS_REFERENCE and any(it.ref_logp is None for it in items):
            reference_logps(model, items, pad_id, cfg.batch_size)
            with ctx.db.session() as session:
                for it in items:
                    session.execute(update(Example).where(Example.id == it.example_id).values(
                        ref_logp=it.ref_logp, ref_rejected_logp=it.ref_rejected_logp, ref_token_logps=it.ref_token_logps))
        ctx.failpoint("before_steps")

        def on_step(record: StepRecord) -> None:
            with ctx.db.session() as session:
                session.add(TrainStep(iteration_id=ctx.iteration_id, step=record.step, loss=record.loss,
                                      learning_rate=record.learning_rate, grad_norm=record.grad_norm,
                                      tokens_per_s=record.tokens_per_s, metrics=record.metrics))
            ctx.failpoint("after_step")

        records = train(model, items, module, algo_cfg, cfg, seed=ctx.seed("train", "order"), pad_id=pad_id,
                        on_step=on_step, on_progress=lambda done, total: ctx.set_progress(done, total, "training steps"),
                        stop_requested=ctx.stop_requested)
        path = ctx.config.state_dir() / "checkpoints" / ctx.config.loop.name / f"iteration-{ctx.number:04d}"
        saved = save_adapter(model, path, base_model=ctx.config.model.base,
                             extra={"loop": ctx.config.loop.name, "iteration": ctx.number, "algorithm": cfg.algorithm})
        ctx.failpoint("after_save")
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    with ctx.db.session() as session:
        ckpt = Checkpoint(path=ctx.config.stored_checkpoint(saved.path), sha256=saved.sha256, kind="lora", base_model=ctx.config.model.base,
                          parent_checkpoint_id=init.checkpoint_id if init else None, size_bytes=saved.size_bytes)
        session.add(ckpt)
        session.flush()
        session.execute(update(Iteration).where(Iteration.id == ctx.iteration_id).values(output_checkpoint_id=ckpt.id))
        if records:
            set_metric(session, ctx.iteration_id, "train.first_loss", records[0].loss)
            set_metric(session, ctx.iteration_id, "train.last_loss", records[-1].loss)
            set_metric(session, ctx.iteration_id, "train.steps", len(records))
        ctx.mark_done(session)
    logger.info("trained {} steps on {} examples; checkpoint {}", len(records), len(items), saved.path)

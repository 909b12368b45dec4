"""Phase curate: the filters of `curate.filters` decide, in order, which of the iteration's prompts select may
train on (data selection: IFD, DEITA, MoDS, the vote-share band, a plug-in's filter), then `curate.budget` caps what is left.

Every score and decision is a row of `curations`, written with the done mark in one transaction: a crash before
it leaves nothing, and the re-run scores again with the same policy and seeds. A filter that drops every prompt
left fails the phase with a one-line error that names it, before anything is trained.
"""

from __future__ import annotations

import time
from typing import Any

from loguru import logger

from selfloop.curation import curate_fn, specs
from selfloop.curation.pool import FilterContext, Verdicts
from selfloop.db.curation import curation_pool, has_curation, store_curation
from selfloop.db.queries import set_metric
from selfloop.errors import SelfloopError
from selfloop.phases.context import PhaseContext


def run(ctx: PhaseContext) -> None:
    cfg = ctx.config.curate
    with ctx.db.session() as session:
        pool = [] if has_curation(session, ctx.iteration_id) or not cfg.filters else curation_pool(session, ctx.iteration_id)
        if not pool:
            ctx.mark_done(session)
            return
    rows: list[dict[str, Any]] = []
    metrics: dict[str, float] = {"curate.prompts": len(pool)}
    engine = ctx.runtime.engine() if any(specs()[f].uses_policy for f in cfg.filters) else None
    left = pool
    for position, name in enumerate(cfg.filters):
        ctx.check_stop()
        started = time.monotonic()
        fctx = FilterContext(engine, ctx.policy, ctx.config.generation.system_prompt, ctx.step,
                             ctx.seed("curate", name))
        verdicts = curate_fn(name)(left, cfg.options(name), fctx)
        by_id = {c.prompt_id: c for c in left}
        rows += [{**row, "position": position, "filter": name} for row in verdicts.rows]
        metrics[f"curate.{name}.seconds"] = time.monotonic() - started
        metrics[f"curate.{name}.kept"] = len(verdicts.kept)
        logger.info("curate: {} kept {} of {} prompts in {:.1f} s", name, len(verdicts.kept), len(left),
                    metrics[f"curate.{name}.seconds"])
        if not verdicts.kept:
            example = next((r["reason"] for r in verdicts.rows if r["kept"] is False), "")
            raise SelfloopError(f"curate: filter {name!r} (curate.filters[{position}]) dropped all {len(left)} prompts "
                                f"left in iteration {ctx.number} (e.g. {example}); loosen curate.{name} or remove it")
        left = [by_id[p] for p in verdicts.kept]
        ctx.failpoint("after_filter")
    if cfg.budget is not None and len(left) > cfg.budget:
        capped = Verdicts(kept=[c.prompt_id for c in left[: cfg.budget]])
        for rank, c in enumerate(left, 1):
            if rank <= cfg.budget:
                capped.decide(c.prompt_id, None, True, f"rank {rank} within curate.budget ({cfg.budget})")
            else:
                capped.decide(c.prompt_id, None, False, f"rank {rank} beyond curate.budget ({cfg.budget}) in the "
                              "order of the filters before")
        rows += [{**row, "position": len(cfg.filters), "filter": "budget"} for row in capped.rows]
        left = left[: cfg.budget]
    metrics["curate.kept"] = len(left)
    with ctx.db.session() as session:
        store_curation(session, ctx.iteration_id, rows)
        for name, value in metrics.items():
            set_metric(session, ctx.iteration_id, name, value)
        ctx.mark_done(session)
    logger.info("curate: {} of {} prompts may be trained on", len(left), len(pool))

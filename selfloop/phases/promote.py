"""Phase promote: the gate. A candidate becomes the loop's policy only if its main held-out metric is
not worse than the starting policy's by more than eval.tolerance.

The decision and a paired 95% interval of the difference (same problems for both policies) are
stored. A rejected checkpoint is kept and marked (promoted = false); the loop continues from its
current policy. After eval.max_rejections rejections in a row the loop pauses instead of burning
compute; `selfloop resume LOOP --unpause` continues it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from selfloop.db import evaluation
from selfloop.db.models import Iteration, Loop
from selfloop.db.queries import add_event, monitor_history, policy_after, row, set_metric
from selfloop.evals.stats import paired_difference
from selfloop.guard import decide
from selfloop.phases.context import PhaseContext

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def _paired(session: Session, iteration_id: int, suite: str, metric: str) -> tuple[float, float, float] | None:
    from selfloop.phases.evaluate import consistent

    def flags(role: str) -> dict[int, bool]:
        if metric == "self_consistency":  # label-free: greedy answer == majority of k samples
            return {i: consistent(p, m) for i, p, m in evaluation.predictions(session, iteration_id, role, suite)}
        return evaluation.verdicts(session, iteration_id, role, suite, majority=metric == "majority_accuracy")

    rows = {role: flags(role) for role in ("candidate", "baseline")}
    keys = sorted(rows["candidate"].keys() & rows["baseline"].keys())
    if not keys:
        return None
    return paired_difference([bool(rows["candidate"][k]) for k in keys], [bool(rows["baseline"][k]) for k in keys])


def promotes(candidate: float, baseline: float, tolerance: float) -> bool:
    """The gate's rule: the candidate is kept unless it is worse than the current policy by more than `tolerance`."""
    return candidate >= baseline - tolerance


def consecutive_rejections(session: Session, loop_id: int) -> int:
    count = 0
    for promoted in evaluation.decisions(session, loop_id):
        if promoted:
            break
        count += 1
    return count


def run(ctx: PhaseContext) -> None:
    cfg = ctx.config.eval
    with ctx.db.session() as session:
        it = row(session, Iteration, ctx.iteration_id)
        loop = row(session, Loop, ctx.loop_id)
        if it.output_checkpoint_id is None:
            add_event(session, loop.id, it.id, "promote.nothing", f"iteration {it.number} trained no checkpoint; the policy stays")
            _guard(ctx, session, loop, it)
            ctx.mark_done(session)
            return
        if "evaluate" not in ctx.config.loop.phases:
            it.promoted, loop.current_checkpoint_id = True, it.output_checkpoint_id
            add_event(session, loop.id, it.id, "promote.ungated", f"iteration {it.number}: promoted without evaluation (no evaluate phase)")
            _guard(ctx, session, loop, it)
            ctx.mark_done(session)
            return
        suite, _, metric = cfg.main_metric.partition("/")
        values = evaluation.figure(session, it.id, suite, metric)
        candidate, baseline = values["candidate"], values["baseline"]
        diff = _paired(session, it.id, suite, metric)
        promote = promotes(candidate, baseline, cfg.tolerance)
        data = {"candidate": candidate, "baseline": baseline, "tolerance": cfg.tolerance, "metric": cfg.main_metric}
        set_metric(session, it.id, "promote.candidate", candidate)
        set_metric(session, it.id, "promote.baseline", baseline)
        interval = ""
        if diff is not None:
            data |= {"delta": diff[0], "delta_ci_low": diff[1], "delta_ci_high": diff[2]}
            set_metric(session, it.id, "promote.delta", diff[0])
            set_metric(session, it.id, "promote.delta_ci_low", diff[1])
            set_metric(session, it.id, "promote.delta_ci_high", diff[2])
            interval = f" (difference {diff[0]:+.3f}, 95% CI {diff[1]:+.3f}..{diff[2]:+.3f})"
        summary = f"{cfg.main_metric} {candidate:.3f} vs {baseline:.3f}{interval}"
        it.promoted = promote
        if promote:
            loop.current_checkpoint_id = it.output_checkpoint_id
            add_event(session, loop.id, it.id, "promote.accepted", f"iteration {it.number} promoted: {summary}", data=data)
        else:
            add_event(session, loop.id, it.id, "promote.rejected",
                      f"iteration {it.number} rejected (worse by more than {cfg.tolerance}): {summary}", level="warning", data=data)
            session.flush()
            if consecutive_rejections(session, loop.id) >= cfg.max_rejections:
                loop.status = "paused"
                loop.status_reason = (f"paused after {cfg.max_rejections} rejected candidates in a row "
                                      f"(last: {summary}); change the config and fork, or `selfloop resume {loop.name} --unpause`")
                add_event(session, loop.id, it.id, "loop.paused", loop.status_reason, level="error")
        _guard(ctx, session, loop, it)
        ctx.mark_done(session)


def _guard(ctx: PhaseContext, session: Session, loop: Loop, it: Iteration) -> None:
    """The collapse guard (selfloop/guard.py), in the promotion's transaction: its decision and its action commit with
    the phase's done mark, or not at all."""
    cfg = ctx.config.guard
    if not cfg.enabled:
        return
    session.flush()
    decision = decide(monitor_history(session, loop.id, it.number), cfg)
    set_metric(session, it.id, "guard.fired", 1.0 if decision is not None else 0.0)
    if decision is None:
        return
    data: dict = {"rule": decision.rule, "action": cfg.action, "kept_iteration": decision.kept, **decision.values}
    if cfg.action == "rollback":
        kept = policy_after(session, loop, decision.kept)
        loop.current_checkpoint_id = kept
        loop.status, data["kept_checkpoint_id"] = "paused", kept
        where = f"iteration {decision.kept}'s policy" if decision.kept else "the loop's start"
        loop.status_reason = (f"guard: {decision.why}; rolled back to {where} and paused "
                              f"(`selfloop resume {loop.name} --unpause` goes on from there)")
    elif cfg.action == "pause":
        loop.status = "paused"
        loop.status_reason = f"guard: {decision.why}; paused (`selfloop resume {loop.name} --unpause` goes on)"
    else:
        loop.status = "finished"
        loop.status_reason = f"guard: {decision.why}; stopped"
    add_event(session, loop.id, it.id, "guard.fired", loop.status_reason, level="warning", data=data)

"""Phase select: the algorithm picks its training examples from the stored samples and judgments
(and, with train.eft, judge-training examples from the judgments that agree with checked answers).

One transaction: the examples and the done mark land together (or not at all).
"""

from __future__ import annotations

from sqlalchemy import func, select

from selfloop.algorithms import spec, trainer
from selfloop.algorithms.spec import AlgorithmSpec
from selfloop.db.models import Example
from selfloop.db.queries import add_event, insert_ignore, set_metric
from selfloop.judging.eft import ALGORITHM as EFT
from selfloop.judging.eft import eft_examples
from selfloop.phases.context import PhaseContext


def run(ctx: PhaseContext) -> None:
    name = ctx.config.train.algorithm
    with ctx.db.session() as session:
        if not session.scalar(select(func.count()).select_from(Example).where(Example.iteration_id == ctx.iteration_id)):
            rows = [{**row, "algorithm": name} for row in trainer(name).select(session, ctx.iteration_id, ctx.config)]
            check_shape(spec(name), rows)
            judge_rows = []
            if ctx.config.train.eft.enabled:
                judge_rows = [{**row, "algorithm": EFT} for row in eft_examples(session, ctx.iteration_id, ctx.config)]
                set_metric(session, ctx.iteration_id, "select.eft_examples", len(judge_rows))
            insert_ignore(session, Example, [
                {**row, "iteration_id": ctx.iteration_id, "item_index": i} for i, row in enumerate(rows + judge_rows)
            ], ["iteration_id", "item_index"])
            set_metric(session, ctx.iteration_id, "select.examples", len(rows))
            if not rows:
                add_event(session, ctx.loop_id, ctx.iteration_id, "select.empty",
                          f"{name} selected no training examples in iteration {ctx.number}", level="warning")
            elif len(rows) < ctx.config.warnings.min_examples:
                add_event(session, ctx.loop_id, ctx.iteration_id, "select.few",
                          f"{name} selected only {len(rows)} training examples in iteration {ctx.number} "
                          f"(floor {ctx.config.warnings.min_examples})", level="warning")
        ctx.mark_done(session)


def check_shape(contract: AlgorithmSpec, rows: list[dict]) -> None:
    """An algorithm's examples have the shape its spec declares: a plug-in's mistake is named here, in one line,
    not met later as a training failure."""
    for row in rows:
        pair = row.get("rejected_sample_id") is not None
        if pair != (contract.shape == "pair") or row.get("prompt_id") is None:
            raise ValueError(f"algorithm {contract.name!r} declares {contract.shape} examples, but its select() "
                             f"returned {row!r}: a pair names prompt_id, sample_id (or text) and rejected_sample_id; "
                             "a rewarded sample names prompt_id and sample_id (or text), with no rejected_sample_id")

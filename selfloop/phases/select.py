"""Phase select: the algorithm picks its training examples from the stored samples and judgments
(and, with train.eft, judge-training examples from the judgments that agree with checked answers); the examples
of prompts the curate phase dropped are left out.

One transaction: the examples (with a ranked example's candidates) and the done mark land together (or not at all).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from selfloop.algorithms import spec, trainer
from selfloop.algorithms.spec import SHARED, AlgorithmSpec
from selfloop.db import iteration
from selfloop.db.curation import dropped_prompts
from selfloop.db.models import Example, ExampleCandidate
from selfloop.db.queries import add_event, insert_ignore, set_metric
from selfloop.judging.eft import ALGORITHM as EFT
from selfloop.judging.eft import eft_examples
from selfloop.phases.context import PhaseContext

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def run(ctx: PhaseContext) -> None:
    name = ctx.config.train.algorithm
    with ctx.db.session() as session:
        if not iteration.example_count(session, ctx.iteration_id):
            rows = [{**row, "algorithm": name} for row in trainer(name).select(session, ctx.iteration_id, ctx.config)]
            check_shape(spec(name), rows)
            rows = [own_data(spec(name), row) for row in rows]
            if "curate" in ctx.config.loop.phases:  # the curate phase's dropped prompts are not trained on
                dropped = dropped_prompts(session, ctx.iteration_id)
                set_metric(session, ctx.iteration_id, "select.uncurated_examples", len(rows))
                rows = [row for row in rows if row["prompt_id"] not in dropped]
            judge_rows = []
            if ctx.config.train.eft.enabled:
                judge_rows = [{**row, "algorithm": EFT} for row in eft_examples(session, ctx.iteration_id, ctx.config)]
                set_metric(session, ctx.iteration_id, "select.eft_examples", len(judge_rows))
            store_examples(session, ctx.iteration_id, rows + judge_rows)
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
        ranked = row.get("candidates") is not None
        fits = {"pair": pair and not ranked, "rewarded": not pair and not ranked,
                "ranked": ranked and not pair and len(row["candidates"]) >= 2
                and all(c.get("sample_id") is not None for c in row["candidates"])}[contract.shape]
        if not fits or row.get("prompt_id") is None:
            raise ValueError(f"algorithm {contract.name!r} declares {contract.shape} examples, but its select() "
                             f"returned {row!r}: a pair names prompt_id, sample_id (or text) and rejected_sample_id; "
                             "a rewarded sample names prompt_id and sample_id (or text); a ranking names prompt_id "
                             "and candidates, two or more {sample_id, score} best first")


def own_data(contract: AlgorithmSpec, row: dict[str, Any]) -> dict[str, Any]:
    """The row with the algorithm's own keys (all but the shared ones) gathered as `data`, validated by the data
    model its spec declares; an algorithm that declares none returns shared keys only."""
    own = {k: v for k, v in row.items() if k not in SHARED}
    shared = {k: v for k, v in row.items() if k in SHARED}
    if not own:
        return shared
    if contract.data is None:
        raise ValueError(f"algorithm {contract.name!r}: its select() returned {sorted(own)}, which are no shared columns "
                         "of an example; declare them as its spec's data model")
    try:
        data = contract.data.model_validate(own)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"algorithm {contract.name!r}: its example data {own!r} does not fit its data model "
                         f"({'.'.join(str(p) for p in first['loc'])}: {first['msg']})") from None
    return {**shared, "data": data.model_dump(mode="json")}


def store_examples(session: Session, iteration_id: int, rows: list[dict]) -> None:
    """The examples in order and, for a ranking, its candidates (its top one as the example's sample)."""
    examples, candidates = [], {}
    for i, row in enumerate(rows):
        ranked = row.pop("candidates", None)
        if ranked is not None:
            row.setdefault("sample_id", ranked[0]["sample_id"])
            candidates[i] = ranked
        examples.append({**row, "iteration_id": iteration_id, "item_index": i})
    insert_ignore(session, Example, examples, ["iteration_id", "item_index"])
    if candidates:
        ids = iteration.example_ids(session, iteration_id, list(candidates))
        insert_ignore(session, ExampleCandidate, [
            {"example_id": ids[i], "rank": rank, "sample_id": c["sample_id"], "score": c.get("score")}
            for i, ranked in candidates.items() for rank, c in enumerate(ranked)], ["example_id", "rank"])

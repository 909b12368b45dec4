"""Phase synthesize: new prompts by self-instruct, stored with their parents and ROUGE-L.

Rounds: each round asks the policy for several new tasks (each from its own few-shot prompt),
filters them in order, and commits the accepted prompts with the cumulative rejection counts and
the round counter in one transaction. A re-run continues at the next round with the same seeds.
"""

from __future__ import annotations

import random
from typing import Any

from loguru import logger

from selfloop.db import iteration
from selfloop.db.curation import hard_prompts
from selfloop.db.models import Prompt
from selfloop.db.queries import insert_ignore, metrics_of, set_metric
from selfloop.engines.base import Sampling
from selfloop.engines.chat import user_chat
from selfloop.families.instructions import sample_constraints
from selfloop.phases.context import PhaseContext
from selfloop.progress import Progress
from selfloop.selfinstruct import Example, Pool, few_shot_prompt, parse_instruction, rejection_reason
from selfloop.tasks import seed_tasks

M = "synthesize."


def prompt_key(iteration: int, item_index: int) -> str:
    """A self-instruct prompt's key as a parent: its natural key in the loop, never a row id, so a run
    resumed after a crash records the same parents as an uninterrupted one (row ids may differ)."""
    return f"prompt:{iteration}.{item_index}"


def run(ctx: PhaseContext) -> None:
    cfg = ctx.config.self_instruct
    tasks = [Example(t.key, t.prompt) for t in seed_tasks()]
    with ctx.db.session() as session:
        hard = [Example(key, text) for key, text in
                (hard_prompts(session, ctx.loop_id, ctx.number - 1, cfg.mine_hard) if cfg.mine_hard.enabled else [])]
        state = metrics_of(session, ctx.iteration_id, M)
        generated = [
            Example(prompt_key(number, index), text)
            for number, index, text in iteration.self_instructed(session, ctx.loop_id)
        ]
        accepted = iteration.prompt_count(session, ctx.iteration_id, "self_instruct")
        if cfg.num_prompts == 0 or accepted >= cfg.num_prompts:
            ctx.mark_done(session)
            return
    # Hard-prompt mining: the few-shot seeds are the previous iteration's hard prompts, the seed tasks filling in
    # while there are fewer than seed_examples; the pool the new prompts must differ from holds both.
    seeds = hard + (tasks if len(hard) < cfg.seed_examples else [])
    if cfg.mine_hard.enabled:
        with ctx.db.session() as session:
            set_metric(session, ctx.iteration_id, M + "hard_seeds", len(hard))
    pool = Pool([e.text for e in tasks + hard] + [e.text for e in generated])
    counts = {k.removeprefix(M): int(v) for k, v in state.items()}
    first_round = counts.get("rounds", 0)
    engine = ctx.runtime.engine()
    sampling = Sampling(n=1, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)
    progress = Progress("synthesize", cfg.num_prompts, "prompt", on_update=ctx.set_progress)
    progress.update(accepted)
    for round_no in range(first_round, cfg.max_rounds):
        ctx.check_stop()
        need = cfg.num_prompts - accepted
        rng = random.Random(ctx.seed("synthesize", round_no))
        requests = [
            few_shot_prompt(seeds, generated, cfg.seed_examples, cfg.generated_examples, rng)
            for _ in range(max(4, 2 * need))
        ]
        chats = [user_chat(text) for text, _ in requests]
        outs = engine.generate(
            chats, sampling, seeds=[[ctx.seed("synthesize", round_no, i)] for i in range(len(chats))], adapter=ctx.policy,
            progress=lambda _done, tokens: progress.update(0, tokens),
        )
        rows: list[dict[str, Any]] = []
        for (_, parents), completions in zip(requests, outs):
            if accepted + len(rows) >= cfg.num_prompts:
                break
            text = parse_instruction(completions[0].text)
            reason = rejection_reason(text, cfg.min_words, cfg.max_words)
            rouge = None
            if reason is None and pool.is_exact_duplicate(text):
                reason = "duplicate"
            if reason is None:
                rouge = pool.max_rouge(text, cfg.rouge_threshold)
                if rouge >= cfg.rouge_threshold:
                    reason = "similar"
            if reason is not None:
                counts[f"rejected.{reason}"] = counts.get(f"rejected.{reason}", 0) + 1
                continue
            index = accepted + len(rows)
            answer = None
            if cfg.constraints:  # seeded by the prompt's place, so a resumed run appends the same ones
                extra, answer = sample_constraints(random.Random(ctx.seed("synthesize.constraints", index)), cfg.constraints)
                text = f"{text} {extra}"
            pool.add(text)  # as stored: a resumed run rebuilds the pool from the stored texts
            rows.append({
                "iteration_id": ctx.iteration_id, "source": "self_instruct", "item_index": index,
                "text": text, "answer": answer, "family": "instructions" if answer is not None else None,
                "parent_ids": parents, "rouge_max": rouge,
            })
        counts["rounds"] = round_no + 1
        counts["accepted"] = accepted + len(rows)
        last = counts["accepted"] >= cfg.num_prompts or round_no + 1 == cfg.max_rounds
        progress.update(len(rows))  # before the commit that may mark the phase done: a kill after it leaves the count
        with ctx.db.session() as session:
            insert_ignore(session, Prompt, rows, ["iteration_id", "source", "item_index"])
            for name, value in counts.items():
                set_metric(session, ctx.iteration_id, M + name, value)
            if last:
                ctx.mark_done(session)
        ctx.failpoint("after_round")
        accepted += len(rows)
        generated += [Example(prompt_key(ctx.number, r["item_index"]), r["text"]) for r in rows]
        if last:
            break
    progress.close()
    rejected = {k: v for k, v in counts.items() if k.startswith("rejected.")}
    logger.info("synthesize: accepted {} new prompts in {} rounds; rejected {}", accepted, counts["rounds"], rejected or "none")

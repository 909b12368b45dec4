"""Phase rollout: draw the iteration's task prompts, then sample N completions of every prompt.

Seeds derive from (loop seed, iteration, prompt source, prompt index, sample index), so re-running
after a crash regenerates exactly the missing rows. Prompts are processed in chunks; each chunk's
samples are committed together (on-conflict-do-nothing), the last with the phase's done mark.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from selfloop.db import iteration
from selfloop.db.models import Prompt, Sample
from selfloop.db.queries import insert_ignore
from selfloop.engines.base import Sampling
from selfloop.engines.chat import prompt_chat
from selfloop.phases.context import PhaseContext
from selfloop.progress import Progress
from selfloop.tasks import load_pool

if TYPE_CHECKING:
    from selfloop.config.sections import EngineConfig


def draw_task_prompts(ctx: PhaseContext) -> None:
    """Insert this iteration's draw from the task pool (the same draw on every re-run)."""
    cfg = ctx.config.generation
    pool = load_pool(cfg.tasks)
    picks = random.Random(ctx.seed("draw")).sample(range(len(pool)), min(cfg.prompts_per_iteration, len(pool)))
    rows = [
        {"iteration_id": ctx.iteration_id, "source": "task", "item_index": i, "task_key": pool[k].key,
         "text": pool[k].prompt, "answer": pool[k].answer, "reference": pool[k].reference,
         "messages": list(chat) if (chat := pool[k].chat) else None,
         "family": pool[k].family if pool[k].answer is not None else None}
        for i, k in enumerate(picks)
    ]
    with ctx.db.session() as session:
        insert_ignore(session, Prompt, rows, ["iteration_id", "source", "item_index"])


def sampling_of(ctx: PhaseContext) -> Sampling:
    g = ctx.config.generation
    return Sampling(n=g.samples_per_prompt, temperature=g.temperature, top_p=g.top_p, top_k=g.top_k,
                    max_new_tokens=g.max_new_tokens, stop=tuple(g.stop), token_stats=True)


def chunk_prompts(engine: EngineConfig, n: int) -> int:
    """Prompts per generate call: enough sequences to fill the engine, few enough to commit often
    (a failed call loses only its own chunk)."""
    sequences = {"hf": 2 * engine.batch_size, "vllm-server": 4 * engine.max_in_flight * len(engine.servers)}.get(engine.kind, 2048)
    return max(1, sequences // n)


def run(ctx: PhaseContext) -> None:
    draw_task_prompts(ctx)
    sampling = sampling_of(ctx)
    with ctx.db.session() as session:
        prompts = iteration.prompts(session, ctx.iteration_id)
        done = iteration.sampled(session, ctx.iteration_id)
        todo = [p for p in prompts if p.id not in done]  # a prompt's n samples are committed together
        if not todo:
            ctx.mark_done(session)
            return
    engine = ctx.runtime.engine()
    system = ctx.config.generation.system_prompt
    per_call = chunk_prompts(ctx.config.engine, sampling.n)
    with Progress("rollout", len(prompts) * sampling.n, on_update=ctx.set_progress,
                  done=(len(prompts) - len(todo)) * sampling.n) as progress:
        for start in range(0, len(todo), per_call):
            ctx.check_stop()
            chunk = todo[start : start + per_call]
            seeds = [[ctx.seed("rollout", p.source, p.item_index, j) for j in range(sampling.n)] for p in chunk]
            outs = engine.generate(
                [prompt_chat(p.text, system, p.messages) for p in chunk], sampling, seeds=seeds, adapter=ctx.policy,
                progress=progress.update,
            )
            rows = [
                {
                    "prompt_id": p.id, "sample_index": j, "iteration_id": ctx.iteration_id,
                    "policy_checkpoint_id": ctx.policy.checkpoint_id if ctx.policy else None,
                    "text": c.text, "token_ids": c.token_ids, "token_logprobs": [round(x, 6) for x in c.token_logprobs],
                    "policy_token_logprobs": None if c.policy_logprobs is None else [round(x, 6) for x in c.policy_logprobs],
                    "token_entropies": c.token_entropies, "token_self_certainties": c.token_self_certainties,
                    "num_tokens": c.num_tokens, "sum_logprob": c.sum_logprob, "mean_logprob": c.mean_logprob,
                    "finish_reason": c.finish_reason, "seed": c.seed, "temperature": sampling.temperature,
                }
                for p, completions in zip(chunk, outs)
                for j, c in enumerate(completions)
            ]
            with ctx.db.session() as session:
                insert_ignore(session, Sample, rows, ["prompt_id", "sample_index"])
                if start + per_call >= len(todo):
                    ctx.mark_done(session)
            ctx.failpoint("after_chunk")

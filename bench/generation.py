"""Benchmark: the rollout phase end to end (prompt draw, seeded sampling, SQL writes) against a bare
`transformers` generate call on the same prompts, weights and settings, alternating in one run.

Also: the time to store 100,000 sample rows, against the time it takes to generate them.

    .venv/bin/python bench/generation.py                 # SmolLM2 on CPU (a few minutes)
    .venv/bin/python bench/generation.py --model tiny    # seconds, for a smoke test

Both sides' work is also set against a ceiling measured in the same run (bench/ceiling.py: the FLOP/s of a
large matmul of the model's shapes; 2 x parameters FLOP per prompt and generated token).

Ends with one line of JSON: ratio, ours_tokens_per_s, bare_tokens_per_s, fraction_of_ceiling, store_share, ...
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import ceiling  # bench/ceiling.py, next to this file
import torch
from sqlalchemy import func, select

from selfloop.config import validate_config
from selfloop.db.engine import open_database
from selfloop.db.models import Prompt, Sample
from selfloop.db.queries import insert_ignore
from selfloop.engines.chat import prompt_ids, user_chat
from selfloop.loop import open_loop, run_iteration
from selfloop.runtime import Runtime


def bare_generate(engine, texts: list[str], n: int, temperature: float, max_new: int, batch_size: int) -> int:
    """transformers' own generate, batched like our engine (batch_size sequences per call); returns tokens."""
    tok = engine.tokenizer
    ids = [prompt_ids(tok, user_chat(t)) for t in texts]
    per_call = max(1, batch_size // n)
    tokens = 0
    for start in range(0, len(ids), per_call):
        batch = ids[start : start + per_call]
        width = max(len(b) for b in batch)
        inp = torch.tensor([[tok.pad_token_id] * (width - len(b)) + b for b in batch])
        mask = (inp != tok.pad_token_id).long()
        for i, b in enumerate(batch):
            mask[i, width - len(b):] = 1
        with torch.inference_mode():
            out = engine.base.generate(
                input_ids=inp, attention_mask=mask, do_sample=True, temperature=temperature, top_p=1.0, top_k=0,
                max_new_tokens=max_new, num_return_sequences=n, pad_token_id=tok.pad_token_id,
            )
        for row in out[:, width:].tolist():  # count up to and including the end-of-turn token
            tokens += next((i + 1 for i, t in enumerate(row) if t in engine.end_ids), len(row))
    return tokens


def store_rows(db, template: dict, count: int) -> float:
    """Seconds to insert `count` sample rows shaped like `template` (committed in chunks of 1000)."""
    with db.session() as s:
        iteration_id, prompt_id = template["iteration_id"], template["prompt_id"]
        first = s.scalar(select(func.max(Sample.sample_index)).where(Sample.prompt_id == prompt_id)) + 1
    started = time.perf_counter()
    for start in range(0, count, 1000):
        rows = [{**template, "sample_index": first + i, "seed": i} for i in range(start, min(count, start + 1000))]
        with db.session() as s:
            insert_ignore(s, Sample, rows, ["prompt_id", "sample_index"])
    del iteration_id
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=2, help="alternations of ours and bare")
    ap.add_argument("--store-rows", type=int, default=100_000)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="selfloop-bench-"))
    url = f"sqlite:///{work / 'bench.db'}"
    base = {
        "model": {"base": args.model},
        "engine": {"batch_size": 16},
        "generation": {"prompts_per_iteration": args.prompts, "samples_per_prompt": args.samples,
                       "max_new_tokens": args.max_new_tokens, "temperature": 0.8, "tasks": {"kind": "arithmetic"}},
        "database": {"url": url},
    }
    db = open_database(url, init=True)
    runtime = None
    ours_tokens = ours_time = bare_tokens = bare_time = 0.0
    samples = prompt_tokens = 0
    peak = params = None
    for r in range(args.rounds):
        config = validate_config({**base, "loop": {"name": f"bench-{r}", "phases": ["rollout"], "max_iterations": 1, "seed": r}})
        if runtime is None:
            runtime = Runtime(config)
            engine = runtime.engine()  # load outside the timed region, shared by both sides
            params = ceiling.count_parameters(engine.base)
            peak = ceiling.matmul_peak_flops(runtime.model.path, next(engine.base.parameters()).dtype)
        runtime.config = config
        open_loop(db, config)
        started = time.perf_counter()
        run_iteration(db, config, runtime)
        ours_time += time.perf_counter() - started
        with db.session() as s:
            loop_prompts = s.scalars(select(Prompt.text).where(Prompt.iteration_id == r + 1).order_by(Prompt.item_index)).all()
            tokens = s.scalar(select(func.sum(Sample.num_tokens)).where(Sample.iteration_id == r + 1))
            samples += s.scalar(select(func.count()).select_from(Sample).where(Sample.iteration_id == r + 1))
        ours_tokens += tokens
        prompt_tokens += sum(len(prompt_ids(runtime.engine().tokenizer, user_chat(t))) for t in loop_prompts)
        torch.manual_seed(r)
        started = time.perf_counter()
        bare_tokens += bare_generate(runtime.engine(), loop_prompts, args.samples, 0.8, args.max_new_tokens, 16)
        bare_time += time.perf_counter() - started
        print(f"round {r}: ours {tokens} tokens, cumulative {ours_tokens / ours_time:.1f} tok/s | "
              f"bare cumulative {bare_tokens / bare_time:.1f} tok/s", flush=True)

    with db.session() as s:
        template = s.execute(select(Sample).limit(1)).scalar_one()
        row = {c: getattr(template, c) for c in ("prompt_id", "iteration_id", "policy_checkpoint_id", "text", "token_ids",
                                                 "token_logprobs", "num_tokens", "sum_logprob", "mean_logprob",
                                                 "finish_reason", "temperature")}
    store_s = store_rows(db, row, args.store_rows)
    generate_s = ours_time / samples * args.store_rows
    result = {
        "model": args.model,
        "ours_tokens_per_s": round(ours_tokens / ours_time, 2),
        "bare_tokens_per_s": round(bare_tokens / bare_time, 2),
        "ratio": round((ours_tokens / ours_time) / (bare_tokens / bare_time), 3),
        "fraction_of_ceiling": {"ours": ceiling.share(ceiling.generation_flops(params, prompt_tokens, ours_tokens), ours_time, peak),
                                "bare": ceiling.share(ceiling.generation_flops(params, prompt_tokens, bare_tokens), bare_time, peak),
                                "matmul_flops_per_s": round(peak), "params": params,
                                "counted": "2 x params FLOP per prompt token (once per prompt) and per generated token"},
        "store_rows": args.store_rows,
        "store_s": round(store_s, 2),
        "generate_s_for_rows": round(generate_s, 1),
        "store_share": round(store_s / generate_s, 5),
    }
    print(f"ours {result['ours_tokens_per_s']} tok/s vs bare transformers.generate {result['bare_tokens_per_s']} tok/s: "
          f"ratio {result['ratio']}")
    print(f"storing {args.store_rows} sample rows took {store_s:.1f}s; generating them takes ~{generate_s:.0f}s: "
          f"share {result['store_share']:.4%}")
    runtime.close()
    db.dispose()
    print(json.dumps(result))


if __name__ == "__main__":
    main()

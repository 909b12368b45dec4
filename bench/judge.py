"""Benchmark: the self-judge's distribution scoring (the instruction lab's judge phase), three ways in one run.

    .venv/bin/python bench/judge.py                 # 32 instruction prompts x 4 samples, 2 rounds (about 10 minutes)
    .venv/bin/python bench/judge.py --rounds 1 --prompts 16
    .venv/bin/python bench/judge.py --model tiny --prompts 2 --rounds 1      # seconds, a smoke test

The samples are SmolLM2's own answers to the first instruction-following training prompts (seeded, 64 tokens, as the
lab's rollout draws them); each round then judges all of them with the additive rubric as `configs/demo-selfreward.yaml`
does (k 1, temperature 0.7, 24 tokens, stopped at "Score:", the verdict's distribution over 0-5), three ways, in turn:

- `before`: what the judge did before issue 47's judge levers: one prefill forward for the whole batch, then the
  verdict from a second prefill of judge prompt + justification + "Score:" (`next_token_logprobs`);
- `chunked`: the same two prefills, each in chunks of rows past `PREFILL_TOKENS` own tokens;
- `now`: chunked prefill, and the verdict read from the judge's own decoding cache (`generate_and_score`).

Prints one JSON line: each way's seconds per round and their mean, the ratios against `before`, whether every way
wrote the same justifications, the largest difference between their scores (expected points), and the settings.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from selfloop.config.base import default_cache_dir
from selfloop.engines.base import Sampling
from selfloop.engines.hf import HFEngine
from selfloop.families import generated
from selfloop.judging.judge import judge_chat, load_template
from selfloop.judging.scores import VERDICT_STOPS, expected_score
from selfloop.models import logprobs
from selfloop.models.resolve import resolve_model
from selfloop.phases.judge import _verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a packaged model, or tiny for a smoke test")
    args = parser.parse_args()
    engine = HFEngine(resolve_model(args.model, default_cache_dir()).path, batch_size=128)
    problems = generated("instructions", [1], "train", "seen")[: args.prompts]
    answers = engine.generate([[{"role": "user", "content": p.prompt}] for p in problems],
                              Sampling(n=4, temperature=0.8, max_new_tokens=64),
                              seeds=[[i * 4 + j for j in range(4)] for i in range(len(problems))])
    template = load_template("judge_additive.txt")
    chats = [judge_chat(template, p.prompt, c.text) for p, row in zip(problems, answers) for c in row]
    sampling = Sampling(n=1, temperature=0.7, max_new_tokens=24, stop=VERDICT_STOPS)
    seeds = [[i] for i in range(len(chats))]
    verdict = _verdict(engine)
    threshold = logprobs.PREFILL_TOKENS

    def two_prefills() -> tuple[list, list[float | None]]:
        outs = engine.generate(chats, sampling, seeds=seeds)
        read = engine.next_token_logprobs(chats, [verdict.tokens(row[0]) for row in outs], verdict.candidates)
        return outs, [expected_score(lps)[0] for lps in read]

    def before() -> tuple[list, list[float | None]]:
        logprobs.PREFILL_TOKENS = 10**12  # one forward per batch, as before the levers
        try:
            return two_prefills()
        finally:
            logprobs.PREFILL_TOKENS = threshold

    def now() -> tuple[list, list[float | None]]:
        outs = engine.generate_and_score(chats, sampling, verdict, seeds=seeds)
        return outs, [expected_score(row[0].follow_logprobs or [])[0] for row in outs]

    ways = {"before": before, "chunked": two_prefills, "now": now}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    results: dict[str, tuple[list, list[float | None]]] = {}
    for _ in range(args.rounds):
        for name, way in ways.items():
            started = time.monotonic()
            results[name] = way()
            seconds[name].append(round(time.monotonic() - started, 1))
    texts = {name: [row[0].token_ids for row in outs] for name, (outs, _) in results.items()}
    scores = {name: s for name, (_, s) in results.items()}
    mean = {name: round(statistics.mean(s), 1) for name, s in seconds.items()}
    print(json.dumps({
        "bench": "judge", "samples": len(chats), "rounds": args.rounds, "seconds": seconds, "mean_seconds": mean,
        "ratio": {name: round(mean[name] / mean["before"], 3) for name in ("chunked", "now")},
        "same_justifications": all(texts[name] == texts["before"] for name in ways),
        "score_max_abs_diff": {name: max(abs(a - b) for a, b in zip(scores[name], scores["before"])
                                         if a is not None and b is not None) for name in ("chunked", "now")},
        "settings": {"model": args.model, "judge": {"k": 1, "temperature": 0.7, "max_new_tokens": 24, "scoring": "distribution",
                               "template": "judge_additive.txt"}, "engine": {"kind": "hf", "batch_size": 128},
                     "prefill_tokens": threshold, "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "cpu": platform.processor() or platform.machine()},
    }))


if __name__ == "__main__":
    main()

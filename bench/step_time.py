"""Benchmark: one optimizer step of every registered algorithm on the same prompts and the same four candidate
completions per prompt, as seconds per step and as a ratio to DPO's, measured in one run on the same model.

Each algorithm gets the batch in its own shape: a pair is candidates 1 and 2, a rewarded sample candidate 1 (reward
1, or 0 for every third prompt: R-Tuning's unsure ones), a ranking all four (scores 4, 3, 2, 1); CUT's even items
are negatives with a judgment in a second prompt, CoIN's every item has a paraphrased second prompt (both run a
second forward pass). So a step of a list-wise method processes twice a pair's tokens, and the JSON says how many
tokens each step saw. Reference log-probs (where the algorithm needs them) are computed once
before the first step, as the train phase does, and timed apart. One warm-up step, then `--steps` timed steps.

    .venv/bin/python bench/step_time.py                 # SmolLM2-135M on CPU (a few minutes)
    .venv/bin/python bench/step_time.py --model tiny    # the random tiny model (seconds)
Ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from selfloop.algorithms import specs, trainer
from selfloop.algorithms.items import TrainItem, fit
from selfloop.config import LoraConfig, TrainConfig, default_cache_dir
from selfloop.engines.chat import completion_ids, prompt_ids, user_chat
from selfloop.models.loading import load_tokenizer
from selfloop.models.resolve import resolve_model
from selfloop.training.loop import load_trainable, reference_logps, train

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def candidates(n: int) -> list[tuple[str, list[str]]]:
    out = []
    for i in range(n):
        a, b = 3 + i % 17, 5 + (7 * i) % 23
        out.append((f"What is {a} + {b}?", [f"{a} + {b} = {a + b}. The answer is {a + b}.",
                                             f"The sum of {a} and {b} is {a + b}.",
                                             f"{a} + {b} = {a + b + 1}. The answer is {a + b + 1}.",
                                             f"I think it is {a * b}."]))
    return out


def context_for(name: str, prompt: str, i: int) -> str | None:
    """The second prompt of an algorithm that has one: CUT's judged prompt for half the items (its negatives),
    CoIN's paraphrase for every item."""
    if name == "cut" and i % 2 == 0:
        from selfloop.algorithms.cut_config import TEMPLATE

        return TEMPLATE.format(instruction=prompt, judgment="The sum is wrong and the answer says too much.")
    if name == "coin":
        return prompt.replace("What is", "How much is")
    return None


def items_for(name: str, shape: str, tok, data, max_length: int) -> list[TrainItem]:
    out = []
    for i, (prompt, texts) in enumerate(data):
        ids = [completion_ids(tok, t, tok.eos_token_id) for t in texts]
        item = TrainItem(i, i, prompt_ids(tok, user_chat(prompt)), ids[0], reward=1.0 if i % 3 else 0.0, weight=1.0)
        if (context := context_for(name, prompt, i)) is not None:
            item.context = prompt_ids(tok, user_chat(context))
        if shape == "pair":
            item.rejected = ids[1]
        elif shape == "ranked":
            item.candidates, item.candidate_scores = ids, [4.0, 3.0, 2.0, 1.0]
        out.append(fit(item, max_length))
    return out


def measure(name: str, model_dir, data, args) -> dict:
    spec = specs()[name]
    tok = load_tokenizer(model_dir)
    items = items_for(name, spec.shape, tok, data, args.max_length)
    torch.manual_seed(0)
    lora = LoraConfig(rank=16, alpha=32, dropout=0.0, target_modules=TARGETS)
    model = load_trainable(model_dir, None, lora, torch.device("cpu"), torch.float32)
    cfg = TrainConfig(algorithm=name, batch_size=args.batch_size, max_steps=1 + args.steps, epochs=1000,
                      learning_rate=1e-5, scheduler="constant", max_length=args.max_length)
    options = cfg.options()
    if spec.fixed_steps:  # RLSC counts its own steps
        options = options.model_copy(update={spec.fixed_steps: 1 + args.steps})
    started = time.perf_counter()
    if spec.needs_reference or name == "rlsc":
        reference_logps(model, items, args.batch_size)
        for it in items:
            it.sampling_logp = it.ref_logp  # RLSC's p_old: the same forward pass
    reference_s = time.perf_counter() - started
    times: list[float] = []
    last = [time.perf_counter()]

    def on_step(record) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    records = train(model, items, trainer(name), options, cfg, seed=0, on_step=on_step)
    timed = times[1:]  # the first step warms up
    tokens = [r.tokens_per_s * t for r, t in zip(records[1:], timed)]
    return {"seconds_per_step": round(statistics.median(timed), 4), "reference_seconds": round(reference_s, 3),
            "tokens_per_step": round(statistics.median(tokens)), "shape": spec.shape, "steps_timed": len(timed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--algorithms", nargs="*", default=None, help="default: every registered one")
    args = parser.parse_args()
    model_dir = resolve_model(args.model, default_cache_dir()).path
    data = candidates(args.prompts)
    names = args.algorithms or [n for n in specs() if n != "spin"]  # SPIN's chosen is a text; its step is DPO's
    results = {name: measure(name, model_dir, data, args) for name in (["dpo"] + [n for n in names if n != "dpo"])}
    base = results["dpo"]["seconds_per_step"]
    for r in results.values():
        r["ratio_to_dpo"] = round(r["seconds_per_step"] / base, 3)
    print(json.dumps({"model": args.model, "batch_size": args.batch_size, "max_length": args.max_length,
                      "threads": torch.get_num_threads(), "dtype": "float32", "lora_rank": 16,
                      "algorithms": results}))


if __name__ == "__main__":
    main()

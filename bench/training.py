"""Benchmark: selfloop's LoRA DPO training against TRL's DPOTrainer on the same pairs, model, LoRA
settings, batch size, max length and number of steps, alternating in one run.

TRL is not a selfloop dependency; it lives only in the benchmark's environment:

    make bench-env                                     # .venv-bench: torch, selfloop, trl
    .venv-bench/bin/python bench/training.py           # SmolLM2 on CPU (a few minutes)
    .venv-bench/bin/python bench/training.py --model tiny

Two TRL configurations are measured, each alternating with ours:
- "trl_default": DPOConfig as it comes: gradient checkpointing on (inherited from TRL's base config),
  reference log-probs recomputed inside every step with the adapter disabled;
- "trl_fair": the same work as ours: gradient checkpointing off, reference log-probs computed once
  before training (precompute_ref_log_probs=True).
Ours computes the reference log-probs once before the first step (included in its time) and does not
checkpoint activations. Both sides' effective settings are read back from the objects that ran and
printed in the JSON. Ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from selfloop.algorithms import dpo
from selfloop.algorithms.items import TrainItem, fit
from selfloop.config import LoraConfig, TrainConfig, default_cache_dir
from selfloop.engines.chat import completion_ids, prompt_ids, user_chat
from selfloop.models.loading import load_causal_lm, load_tokenizer
from selfloop.models.resolve import resolve_model
from selfloop.training.loop import load_trainable, reference_logps, train

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def pairs(n: int) -> list[tuple[str, str, str]]:
    out = []
    for i in range(n):
        a, b = 3 + i % 17, 5 + (7 * i) % 23
        out.append((f"What is {a} + {b}?", f"{a} + {b} = {a + b}. The answer is {a + b}.",
                    f"{a} + {b} = {a + b + 1 + i % 3}. The answer is {a + b + 1 + i % 3}."))
    return out


def run_ours(model_dir, data, args) -> tuple[float, float, dict]:
    tok = load_tokenizer(model_dir)
    items = [fit(TrainItem(i, i, prompt_ids(tok, user_chat(p)), completion_ids(tok, c, tok.eos_token_id),
                           completion_ids(tok, r, tok.eos_token_id)), args.max_length)
             for i, (p, c, r) in enumerate(data)]
    torch.manual_seed(0)
    lora = LoraConfig(rank=16, alpha=32, dropout=0.0, target_modules=TARGETS)
    model = load_trainable(model_dir, None, lora, torch.device("cpu"), torch.float32)
    cfg = TrainConfig(batch_size=args.batch_size, max_steps=args.steps, learning_rate=5e-5, scheduler="constant",
                      max_length=args.max_length, epochs=100)
    started = time.perf_counter()
    reference_logps(model, items, args.batch_size)
    records = train(model, items, dpo, dpo.DPOConfig(beta=0.1), cfg, seed=0)
    seconds = time.perf_counter() - started
    settings = {"gradient_checkpointing": cfg.gradient_checkpointing, "reference": "once, before the first step",
                "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum, "max_length": cfg.max_length,
                "steps": len(records), "learning_rate": cfg.learning_rate, "lora_rank": lora.rank,
                "lora_alpha": lora.alpha, "target_modules": len(lora.target_modules), "dtype": "float32",
                "threads": torch.get_num_threads()}
    return seconds, records[0].loss, settings


def run_trl(model_dir, data, args, fair: bool) -> tuple[float, float, dict]:
    from datasets import Dataset
    from peft import LoraConfig as PeftLora
    from trl import DPOConfig, DPOTrainer

    tok = load_tokenizer(model_dir, padding_side="left")
    dataset = Dataset.from_list([
        {"prompt": [{"role": "user", "content": p}], "chosen": [{"role": "assistant", "content": c}],
         "rejected": [{"role": "assistant", "content": r}]} for p, c, r in data
    ])
    torch.manual_seed(0)
    model = load_causal_lm(model_dir, torch.device("cpu"), torch.float32)
    fair_settings = {"gradient_checkpointing": False, "precompute_ref_log_probs": True} if fair else {}
    config = DPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"), per_device_train_batch_size=args.batch_size, max_steps=args.steps,
        learning_rate=5e-5, lr_scheduler_type="constant", beta=0.1, loss_type=["sigmoid"], max_length=args.max_length,
        logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, bf16=False, seed=0,
        dataloader_num_workers=0, gradient_accumulation_steps=1, **fair_settings,
    )
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tok,
                         peft_config=PeftLora(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM"))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    first = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    settings = {"gradient_checkpointing": trainer.args.gradient_checkpointing,
                "precompute_ref_log_probs": getattr(trainer.args, "precompute_ref_log_probs", None),
                "reference": "once, before the first step" if getattr(trainer.args, "precompute_ref_log_probs", False)
                else "in every step (adapter disabled)", "batch_size": trainer.args.per_device_train_batch_size,
                "grad_accum": trainer.args.gradient_accumulation_steps, "max_length": trainer.args.max_length,
                "steps": trainer.state.global_step, "learning_rate": trainer.args.learning_rate,
                "optim": str(trainer.args.optim), "padding_free": getattr(trainer.args, "padding_free", None),
                "lora_rank": 16, "lora_alpha": 32, "target_modules": len(TARGETS), "dtype": "float32",
                "threads": torch.get_num_threads()}
    return seconds, first, settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    model_dir = resolve_model(args.model, default_cache_dir()).path
    data = pairs(args.pairs)
    done = args.rounds * args.steps * args.batch_size
    result: dict = {"model": args.model, "pairs_per_step": args.batch_size, "steps": args.steps, "rounds": args.rounds}
    for peer, fair in (("trl_default", False), ("trl_fair", True)):
        ours_s = trl_s = 0.0
        for r in range(args.rounds):  # alternating, so that drifts of the machine hit both sides
            s, ours_loss, ours_settings = run_ours(model_dir, data, args)
            ours_s += s
            t, trl_loss, trl_settings = run_trl(model_dir, data, args, fair)
            trl_s += t
            print(f"{peer} round {r}: ours {s:.1f}s (step-0 loss {ours_loss:.5f}) | trl {t:.1f}s (step-0 loss {trl_loss:.5f})",
                  flush=True)
        result[peer] = {
            "ours_pairs_per_s": round(done / ours_s, 3), "trl_pairs_per_s": round(done / trl_s, 3),
            "ratio": round(trl_s / ours_s, 3), "step0_loss_ours": round(ours_loss, 6), "step0_loss_trl": round(trl_loss, 6),
            "ours_settings": ours_settings, "trl_settings": trl_settings,
        }
        print(f"{peer}: ours {result[peer]['ours_pairs_per_s']} vs TRL {result[peer]['trl_pairs_per_s']} pairs/s, "
              f"ratio {result[peer]['ratio']}", flush=True)
    import trl

    result["trl_version"] = trl.__version__
    print(json.dumps(result))


if __name__ == "__main__":
    main()

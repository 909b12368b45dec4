"""The LoRA training loop on the tiny model: each algorithm's step moves the model the right way,
runs are reproducible, checkpoints round-trip and refuse damage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from selfloop.adapters import Adapter, verify_checkpoint
from selfloop.algorithms import dpo, emft, rest, rlsc, ttrl
from selfloop.algorithms.items import TrainItem, fit, sums, truncate
from selfloop.config import LoraConfig, TrainConfig
from selfloop.engines.chat import completion_ids, prompt_ids, user_chat
from selfloop.errors import CheckpointError
from selfloop.models.loading import load_tokenizer
from selfloop.training.checkpoint import save_adapter
from selfloop.training.loop import load_trainable, policy_logps, reference_logps, train

pytestmark = pytest.mark.integration
CPU = torch.device("cpu")
LORA = LoraConfig(rank=4, alpha=8)


@pytest.fixture(scope="module")
def tok(tiny_model):
    return load_tokenizer(tiny_model.path)


def _model(tiny_model, seed: int = 0, init: Adapter | None = None):
    torch.manual_seed(seed)
    return load_trainable(tiny_model.path, init, LORA, CPU, torch.float32)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"batch_size": 4, "learning_rate": 1e-2, "max_steps": 1, "scheduler": "constant", **kw})


def _item(tok, i: int, prompt: str, answer: str, rejected: str | None = None, **kw) -> TrainItem:
    eos = tok.eos_token_id
    return TrainItem(i, i, prompt_ids(tok, user_chat(prompt)), completion_ids(tok, answer, eos),
                     completion_ids(tok, rejected, eos) if rejected else None, **kw)


def _logps(model, tok, items, rejected: bool = False) -> torch.Tensor:
    with torch.no_grad():
        model.eval()
        return sums(policy_logps(model)([i.prompt for i in items],
                                                          [i.rejected if rejected else i.completion for i in items]))


def test_one_dpo_step_raises_the_margin(tiny_model, tok) -> None:
    items = [_item(tok, i, f"What is {i} + 2?", f"The answer is {i + 2}.", f"The answer is {i + 7}.") for i in range(4)]
    model = _model(tiny_model)
    reference_logps(model, items, 4)
    before = (_logps(model, tok, items) - _logps(model, tok, items, True)).mean()
    records = train(model, items, dpo, dpo.DPOConfig(beta=0.1), _cfg(), seed=0)
    after = (_logps(model, tok, items) - _logps(model, tok, items, True)).mean()
    assert records[0].loss == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 0: log 2
    assert after > before + 1e-3


def test_one_rest_step_lowers_its_loss(tiny_model, tok) -> None:
    items = [_item(tok, i, f"What is {i} + 1?", f"{i} + 1 = {i + 1}") for i in range(4)]
    model = _model(tiny_model)
    lengths = torch.tensor([len(i.completion) for i in items], dtype=torch.float32)
    before = rest.loss(_logps(model, tok, items), lengths).mean()
    train(model, items, rest, rest.RestConfig(), _cfg(), seed=0)
    assert rest.loss(_logps(model, tok, items), lengths).mean() < before - 1e-3


def test_one_rlsc_step_raises_the_samples_logprob(tiny_model, tok) -> None:
    items = [_item(tok, i, f"Count to {i}.", " ".join(str(k) for k in range(i + 1))) for i in range(4)]
    model = _model(tiny_model)
    before = _logps(model, tok, items)
    for it, lp in zip(items, before):
        it.sampling_logp = float(lp)  # p_old: the sampling policy's log-prob
    train(model, items, rlsc, rlsc.RLSCConfig(alpha=0.1, steps=1), _cfg(), seed=0)
    assert _logps(model, tok, items).mean() > before.mean() + 1e-3


def test_one_emft_step_lowers_the_entropy_of_the_policys_own_samples(tiny_model, tok) -> None:
    items = [_item(tok, i, f"What is {i} + 4?", f"{i} + 4 = {i + 4}.") for i in range(4)]
    model = _model(tiny_model)

    def entropy() -> float:
        with torch.no_grad():
            model.eval()
            rows = policy_logps(model).entropies([i.prompt for i in items], [i.completion for i in items])
            return emft.loss(rows).mean().item()

    before = entropy()
    records = train(model, items, emft, emft.EMFTConfig(), _cfg(), seed=0)
    assert records[0].loss == pytest.approx(before, rel=1e-4)  # the first step's loss is the entropy it starts from
    assert records[0].metrics["mean_entropy"] == pytest.approx(before, rel=1e-4)
    assert entropy() < before - 1e-3


def test_ttrl_raises_the_majority_answer(tiny_model, tok) -> None:
    """One prompt, four samples: three agree on 5 (the majority, reward 1), one says 6 (reward 0)."""
    answers = ["The answer is 5.", "The answer is 5.", "The answer is 5.", "The answer is 6."]
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0])
    adv = ttrl.advantages(rewards, torch.zeros(4, dtype=torch.long))
    items = [_item(tok, i, "What is 2 + 3?", a, reward=float(r), weight=float(w)) for i, (a, r, w) in enumerate(zip(answers, rewards, adv))]
    model = _model(tiny_model)
    reference_logps(model, items, 4)
    before = _logps(model, tok, items)
    train(model, items, ttrl, ttrl.TTRLConfig(n_train=4), _cfg(), seed=0)
    after = _logps(model, tok, items)
    assert after[0] > before[0] + 1e-3 and after[3] < before[3]


def test_training_is_reproducible_and_changes_only_the_adapter(tiny_model, tok) -> None:
    items = [_item(tok, i, f"What is {i} + 1?", f"{i + 1}") for i in range(6)]

    def run() -> dict[str, torch.Tensor]:
        model = _model(tiny_model, seed=3)
        records = train(model, items, rest, rest.RestConfig(), _cfg(max_steps=3, batch_size=2), seed=5)
        assert all(torch.isfinite(torch.tensor(r.loss)) for r in records) and len(records) == 3
        return {k: v.detach().clone() for k, v in model.named_parameters()}

    first, second = run(), run()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    fresh = {k: v.detach() for k, v in _model(tiny_model, seed=3).named_parameters()}
    changed = [k for k in first if not torch.equal(first[k], fresh[k])]
    assert changed and all("lora_" in k for k in changed)


def test_truncation_keeps_the_completion() -> None:
    assert truncate(list(range(10)), [[100, 101]], 5) == ([7, 8, 9], [[100, 101]])
    assert truncate([1, 2], [list(range(10))], 5) == ([2], [[0, 1, 2, 3]])
    # A pair shares one prompt, cut for the longer completion.
    item = fit(TrainItem(0, 0, list(range(10)), [100, 101], [200, 201, 202]), 6)
    assert item.prompt == [7, 8, 9] and item.completion == [100, 101] and item.rejected == [200, 201, 202]


def test_checkpoint_round_trip_and_damage(tiny_model, tok, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    items = [_item(tok, i, f"What is {i} + 1?", f"{i + 1}") for i in range(4)]
    model = _model(tiny_model)
    train(model, items, rest, rest.RestConfig(), _cfg(max_steps=2), seed=0)
    saved = save_adapter(model, tmp_path / "ckpt")
    assert {p.name for p in saved.path.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "MANIFEST.json"}
    verify_checkpoint(saved.path, saved.sha256)
    base = AutoModelForCausalLM.from_pretrained(tiny_model.path, use_safetensors=True)
    loaded = PeftModel.from_pretrained(base, str(saved.path)).eval()
    ids = torch.tensor([items[0].prompt + items[0].completion])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, loaded(input_ids=ids).logits)
    # Continuing from the checkpoint starts exactly where it ended.
    again = load_trainable(tiny_model.path, Adapter(1, saved.path, saved.sha256), LORA, CPU, torch.float32)
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids).logits, loaded(input_ids=ids).logits)

    weights = saved.path / "adapter_model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:-1])
    with pytest.raises(CheckpointError, match=r"adapter_model.safetensors: truncated"):
        verify_checkpoint(saved.path, saved.sha256)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01
    weights.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=r"adapter_model.safetensors: contents altered"):
        load_trainable(tiny_model.path, Adapter(1, saved.path, saved.sha256), LORA, CPU, torch.float32)
    weights.write_bytes(good)
    (saved.path / "MANIFEST.json").unlink()
    with pytest.raises(CheckpointError, match=r"MANIFEST.json: manifest is missing"):
        verify_checkpoint(saved.path, saved.sha256)


def test_the_rollout_s_own_log_probs_stand_in_for_the_reference_pass(tiny_model, tmp_path: Path, sqlite_url: str,
                                                                     monkeypatch) -> None:
    """TTRL sampled at temperature 0.7: the hf engine records each token's log-prob under the policy at
    temperature 1, and training takes those as its reference instead of a forward pass. They agree with
    that forward pass (run here for comparison) to float noise, and end up on the example rows."""
    from sqlalchemy import select

    import selfloop.phases.train as train_phase
    from selfloop.db.engine import open_database
    from selfloop.db.models import Example, Iteration, Prompt, Sample
    from selfloop.db.queries import adapter_of
    from selfloop.engines.hf import HFEngine
    from selfloop.runner import run_loop
    from selfloop.signals import StopFlag
    from tests.conftest import make_config

    computed: list[int] = []
    real = train_phase.reference_logps

    def counting(model, items, batch_size):
        computed.append(sum(1 for it in items if train_phase.lacks_reference(it)))
        return real(model, items, batch_size)

    monkeypatch.setattr(train_phase, "reference_logps", counting)
    config = make_config(tmp_path, sqlite_url, loop={"max_iterations": 2, "phases": ["rollout", "judge", "select", "train",
                                                                              "evaluate", "promote"]},
                         generation={"temperature": 0.7, "prompts_per_iteration": 6, "samples_per_prompt": 4,
                                     "max_new_tokens": 12, "tasks": {"kind": "arithmetic"}},
                         judge={"signals": ["vote"]}, train={"algorithm": "ttrl", "batch_size": 4, "max_length": 128,
                                                           "learning_rate": 1e-3, "lora": {"rank": 4, "alpha": 8},
                                                           "ttrl": {"n_train": 4}},
                         eval={"suites": [{"name": "arithmetic", "kind": "arithmetic", "size": 4, "max_new_tokens": 4}],
                               "tolerance": 1.0})
    run_loop(config, None, StopFlag())
    assert computed == []  # no reference forward pass in either iteration
    db = open_database(sqlite_url)
    engine = HFEngine(tiny_model.path, batch_size=8)
    with db.session() as s:
        rows = s.execute(select(Example, Sample, Prompt.text, Iteration.base_checkpoint_id)
                         .join(Sample, Sample.id == Example.sample_id).join(Prompt, Prompt.id == Example.prompt_id)
                         .join(Iteration, Iteration.id == Example.iteration_id)).all()
        assert {ckpt for *_, ckpt in rows} == {None, 1}  # iteration 2 sampled (and trains from) iteration 1's adapter
        for example, sample, text, ckpt in rows:
            assert example.ref_token_logps == sample.policy_token_logprobs and sample.policy_checkpoint_id == ckpt
            assert example.ref_logp == pytest.approx(sum(sample.policy_token_logprobs))
            assert max(abs(a - b) for a, b in zip(sample.token_logprobs, sample.policy_token_logprobs)) > 1e-3  # tempered
            forward = engine.score([user_chat(text)], [sample.token_ids], adapter=adapter_of(s, ckpt, config))[0]
            assert max(abs(a - b) for a, b in zip(forward, sample.policy_token_logprobs)) < 1e-4
    db.dispose()


def test_rollout_log_probs_are_used_only_for_samples_of_the_starting_policy() -> None:
    from types import SimpleNamespace

    from selfloop.algorithms.items import lacks_reference
    from selfloop.phases.train import _reference_from_rollout

    def sample(policy, logps):
        return SimpleNamespace(policy_checkpoint_id=policy, policy_token_logprobs=logps)

    def item(rejected=None) -> TrainItem:
        return TrainItem(1, 1, [5, 6], [7, 8, 9], rejected=rejected)

    it = item()
    _reference_from_rollout(it, sample(3, [-0.5, -1.0, -0.25, -9.0]), None, 3)  # a longer record: cut to the completion
    assert (it.ref_token_logps, it.ref_logp, lacks_reference(it)) == ([-0.5, -1.0, -0.25], -1.75, False)
    for chosen, policy in ((sample(2, [-0.5] * 3), 3), (sample(None, [-0.5] * 3), 3), (sample(3, None), 3),
                           (sample(3, [-0.5] * 2), 3), (None, 3)):
        it = item()
        _reference_from_rollout(it, chosen, None, policy)  # another policy, no record, a short one, no sample
        assert lacks_reference(it)
    pair = item(rejected=[7, 10])
    _reference_from_rollout(pair, sample(3, [-0.5] * 3), sample(3, [-1.0, -2.0]), 3)
    assert (pair.ref_logp, pair.ref_rejected_logp) == (-1.5, -3.0) and not lacks_reference(pair)
    pair = item(rejected=[7, 10])
    _reference_from_rollout(pair, sample(3, [-0.5] * 3), sample(4, [-1.0, -2.0]), 3)  # rejected from another policy
    assert lacks_reference(pair) and pair.ref_logp is None


def test_judge_examples_add_their_weighted_nll_to_the_algorithm_s_loss(tiny_model, tok) -> None:
    """EFT beside DPO: the batch loss is (sum of DPO losses + sum of weight x mean token NLL) / items,
    computed here by hand from the same model; a step on it raises the judge target's log-prob."""
    from selfloop.training.loop import mixed_loss

    pairs = [_item(tok, i, f"What is {i} + 2?", f"The answer is {i + 2}.", f"The answer is {i + 7}.") for i in range(2)]
    judge = [_item(tok, 10, "Rate this answer.", "It is right.\nScore: 5", weight=0.5, judge=True),
             _item(tok, 11, "Rate that answer.", "It is wrong.\nScore: 1", weight=2.0, judge=True)]
    model = _model(tiny_model)
    reference_logps(model, pairs + judge, 4)
    assert all(it.ref_logp is None for it in judge)  # judge targets need no reference pass
    model.eval()
    policy = policy_logps(model)
    with torch.no_grad():
        loss, metrics = mixed_loss(dpo, pairs + judge, policy, dpo.DPOConfig(beta=0.1))
        token_logps = policy([it.prompt for it in judge], [it.completion for it in judge])
    nll = [-(lp.mean().item()) * it.weight for lp, it in zip(token_logps, judge)]
    expected = (2 * 0.693147 + sum(nll)) / 4  # policy == reference: each DPO loss is log 2
    assert loss.item() == pytest.approx(expected, abs=1e-4)
    assert metrics["eft_loss"] == pytest.approx(sum(nll) / 4, abs=1e-4) and "reward_margin" in metrics
    before = _logps(model, tok, judge)
    train(model, pairs + judge, dpo, dpo.DPOConfig(beta=0.1), _cfg(), seed=0)
    assert (_logps(model, tok, judge) > before).all()


@pytest.mark.parametrize("shared", [0, 20])
def test_packed_log_probs_equal_padded_ones_with_their_gradients(tiny_model, shared: int) -> None:
    """Training packs a batch into one row (no padding; each sequence attends to itself only, grouped KV heads
    included: the tiny model has 3 query heads on 1 KV head), with a prefix every prompt shares (a system turn:
    20 tokens here) held once. Values and LoRA gradients equal the padded computation's up to rounding, for
    uneven lengths and an empty completion; an empty prompt is refused."""
    import random

    from selfloop.models import logprobs
    from selfloop.models.logprobs import completion_logprobs, packed_completion_logprobs

    rng = random.Random(3)
    model = _model(tiny_model)
    vocab = model.config.vocab_size
    head = [rng.randrange(3, vocab) for _ in range(shared)]
    prompts = [head + [rng.randrange(3, vocab) for _ in range(n)] for n in (1, 7, 12, 4, 9)]
    completions = [[rng.randrange(3, vocab) for _ in range(n)] for n in (5, 0, 8, 1, 11)]
    assert logprobs.shared_prefix_length(prompts) == shared  # the packed row holds the prefix once
    lora = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        for p in lora:
            p.normal_(std=0.2)  # B non-zero too: the adapter takes part in the prefix's keys and values

    def run(fn):
        model.zero_grad()
        rows = fn(prompts, completions)
        torch.stack([r.sum() * (i + 1) for i, r in enumerate(rows)]).sum().backward()  # rows weighted unequally
        return [r.detach() for r in rows], [p.grad.clone() for p in lora]

    padded, padded_grads = run(lambda p, c: completion_logprobs(model, p, c, 0))
    packed, packed_grads = run(lambda p, c: packed_completion_logprobs(model, p, c))
    assert [len(r) for r in packed] == [5, 0, 8, 1, 11]
    for a, b in zip(padded, packed):
        assert torch.allclose(a, b, atol=1e-5)
    for a, b in zip(padded_grads, packed_grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert all(g.abs().sum() > 0 for g in packed_grads)
    with pytest.raises(ValueError, match="at least one token"):
        packed_completion_logprobs(model, [[], [5]], [[4], [6]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_addmm_lora_updates_equal_peft_s_own_sum(tiny_model, dtype: torch.dtype) -> None:
    """The training model adds each LoRA update by addmm (selfloop.models.fused_lora): outputs and adapter
    gradients equal peft's plain `base + B(A(x)) * scaling`, for a float32 model and for a bf16 base with
    float32 adapters (peft's default there); the saved adapter holds the same tensors."""
    from peft.tuners.lora import Linear as LoraLinear

    from selfloop.models.fused_lora import AddmmLora

    torch.manual_seed(0)
    model = load_trainable(tiny_model.path, None, LoraConfig(rank=4, alpha=8), torch.device("cpu"), dtype)
    layers = [m for m in model.modules() if isinstance(m, LoraLinear)]
    assert layers and all(isinstance(m.lora_variant["default"], AddmmLora) for m in layers)
    with torch.no_grad():
        for m in layers:
            m.lora_B["default"].weight.normal_(std=0.5)  # a non-zero update
    ids = torch.tensor([[5, 9, 14, 3, 22, 7, 11]])
    lora = [p for p in model.parameters() if p.requires_grad]

    def run():
        model.zero_grad()
        logits = model(input_ids=ids).logits.float()
        logits.logsumexp(-1).sum().backward()
        return logits.detach(), [p.grad.float().clone() for p in lora]

    fused, fused_grads = run()
    variants = [m.lora_variant.pop("default") for m in layers]  # peft's own path
    plain, plain_grads = run()
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    assert torch.allclose(fused, plain, atol=tol, rtol=tol)
    for a, b in zip(fused_grads, plain_grads):
        assert torch.allclose(a, b, atol=tol, rtol=tol)
    for m, v in zip(layers, variants):
        m.lora_variant["default"] = v
    assert all(m.lora_A["default"].weight.dtype == torch.float32 for m in layers)

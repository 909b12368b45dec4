"""The hf engine on the tiny model: seeded sampling, log-probs, stops, adapters."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from selfloop.engines.base import Sampling
from selfloop.engines.hf import HFEngine, sample_next
from selfloop.errors import CheckpointError
from tests.conftest import make_adapter

CHATS = [[{"role": "user", "content": f"What is {i} + 3?"}] for i in range(3)]


@pytest.fixture(scope="module")
def engine(tiny_model) -> HFEngine:
    return HFEngine(tiny_model.path, batch_size=4)


def test_sample_next_logprobs_follow_the_sampling_distribution() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    gen = torch.Generator().manual_seed(0)
    # Greedy: the argmax with the model's own (temperature 1) log-prob.
    log_z = math.log(sum(math.exp(x) for x in (2, 1, 0, -1)))
    policy = lambda t: [2.0, 1.0, 0.0, -1.0][t] - log_z  # noqa: E731 - the model's own log-prob, temperature 1
    tok, lp, plp = sample_next(logits, Sampling(temperature=0.0), [gen])
    assert tok.item() == 0 and lp.item() == pytest.approx(policy(0), abs=1e-6) and plp.item() == lp.item()
    # Temperature 0.5: log softmax(logits / 0.5); the policy's log-prob stays at temperature 1.
    tok, lp, plp = sample_next(logits, Sampling(temperature=0.5), [gen])
    scaled = [x / 0.5 for x in (2.0, 1.0, 0.0, -1.0)]
    expected = scaled[tok.item()] - math.log(sum(math.exp(x) for x in scaled))
    assert lp.item() == pytest.approx(expected, abs=1e-5) and plp.item() == pytest.approx(policy(tok.item()), abs=1e-6)
    # top_k=2 renormalises over the two best tokens only; the policy's log-prob does not.
    draws = [sample_next(logits, Sampling(temperature=1.0, top_k=2), [gen]) for _ in range(50)]
    assert {t.item() for t, _, _ in draws} <= {0, 1}
    for t, l, p in draws:
        expected = [2.0, 1.0][t.item()] - math.log(math.exp(2) + math.exp(1))
        assert l.item() == pytest.approx(expected, abs=1e-5) and p.item() == pytest.approx(policy(t.item()), abs=1e-6)
    # top_p small enough keeps only the most likely token (probability 1 after renormalising).
    tok, lp, plp = sample_next(logits, Sampling(temperature=1.0, top_p=0.5), [gen])
    assert tok.item() == 0 and lp.item() == pytest.approx(0.0, abs=1e-6) and plp.item() == pytest.approx(policy(0), abs=1e-6)


def test_generation_and_scoring_agree(engine: HFEngine) -> None:
    outs = engine.generate(CHATS, Sampling(n=2, temperature=1.0, max_new_tokens=10),
                           seeds=[[i * 10 + j for j in range(2)] for i in range(3)])
    flat = [c for row in outs for c in row]
    scores = engine.score([c for c in CHATS for _ in range(2)], [c.token_ids for c in flat])
    for c, s in zip(flat, scores):
        assert len(s) == c.num_tokens
        assert max(abs(a - b) for a, b in zip(c.token_logprobs, s)) < 1e-4
        assert c.policy_logprobs == c.token_logprobs  # temperature 1, nothing filtered: the same distribution
    # At another temperature the engine still records the policy's own log-probs, which scoring recomputes.
    outs = engine.generate(CHATS, Sampling(n=2, temperature=0.7, max_new_tokens=10),
                           seeds=[[i * 10 + j for j in range(2)] for i in range(3)])
    flat = [c for row in outs for c in row]
    scores = engine.score([c for c in CHATS for _ in range(2)], [c.token_ids for c in flat])
    for c, s in zip(flat, scores):
        assert max(abs(a - b) for a, b in zip(c.policy_logprobs, s)) < 1e-4
        assert max(abs(a - b) for a, b in zip(c.token_logprobs, s)) > 1e-3  # tempered: another distribution
        assert c.sum_logprob == pytest.approx(sum(c.token_logprobs)) and c.mean_logprob == pytest.approx(c.sum_logprob / c.num_tokens)


def test_seeds_reproduce_samples_whatever_the_batching(tiny_model, engine: HFEngine) -> None:
    sampling = Sampling(n=3, temperature=1.0, max_new_tokens=8)
    seeds = [[100 * i + j for j in range(3)] for i in range(3)]
    a = engine.generate(CHATS, sampling, seeds=seeds)
    other = HFEngine(tiny_model.path, batch_size=2)
    b = other.generate(CHATS[::-1], sampling, seeds=seeds[::-1])
    assert [[c.token_ids for c in row] for row in a] == [[c.token_ids for c in row] for row in b[::-1]]
    c = engine.generate(CHATS, sampling, seeds=[[s + 1 for s in row] for row in seeds])
    assert [[x.token_ids for x in row] for row in a] != [[x.token_ids for x in row] for row in c]


def test_greedy_is_deterministic_and_lengths_are_respected(engine: HFEngine) -> None:
    outs = engine.generate(CHATS, Sampling(n=2, temperature=0.0, max_new_tokens=6))
    for row in outs:
        assert row[0].token_ids == row[1].token_ids
        for c in row:
            assert c.num_tokens <= 6 and c.finish_reason in ("stop", "length")
            assert c.finish_reason == "stop" or c.num_tokens == 6


def test_stop_strings_cut_the_text(engine: HFEngine) -> None:
    sampling = Sampling(n=1, temperature=1.0, max_new_tokens=20)
    free = engine.generate(CHATS[1:2], sampling, seeds=[[5]])[0][0]
    stop = free.text[4:7]
    assert len(stop) == 3 and stop.isprintable(), free.text  # the seeded sample is fixed; pick a stop inside it
    cut = engine.generate(CHATS[1:2], Sampling(n=1, temperature=1.0, max_new_tokens=20, stop=(stop,)), seeds=[[5]])[0][0]
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[: free.text.find(stop)]
    assert cut.token_ids == free.token_ids[: cut.num_tokens] and cut.num_tokens < free.num_tokens


def test_adapters_change_outputs_and_base_is_restored(tiny_model, engine: HFEngine, tmp_path: Path) -> None:
    adapter = make_adapter(tiny_model.path, tmp_path / "a1", seed=1)
    greedy = Sampling(n=1, temperature=0.0, max_new_tokens=8)
    base = engine.generate(CHATS, greedy)
    tuned = engine.generate(CHATS, greedy, adapter=adapter)
    assert [r[0].token_ids for r in base] != [r[0].token_ids for r in tuned]
    assert [r[0].token_ids for r in engine.generate(CHATS, greedy)] == [r[0].token_ids for r in base]
    ids = [r[0].token_ids for r in tuned]
    s_base, s_tuned = engine.score(CHATS, ids), engine.score(CHATS, ids, adapter=adapter)
    assert all(max(abs(a - b) for a, b in zip(x, y)) > 1e-3 for x, y in zip(s_base, s_tuned))


def test_decoding_with_an_adapter_folds_it_into_the_weights_and_restores_them(tiny_model, engine: HFEngine, tmp_path: Path) -> None:
    """Decoding runs the adapter merged (W + scale * B @ A): the sampled tokens and their log-probs equal the
    unmerged model's scoring, the base model's own weight tensors come back untouched (same objects, same
    bits), and the adapter's layers stay unmerged."""
    from peft.tuners.lora import Linear as LoraLinear

    from selfloop.engines.hf import merged_weights

    adapter = make_adapter(tiny_model.path, tmp_path / "a1", seed=1)
    engine.generate(CHATS[:1], Sampling(max_new_tokens=1), adapter=adapter)  # loads it: the model is a PeftModel now
    layers = [m for m in engine.model.modules() if isinstance(m, LoraLinear)]
    before = [(m.get_base_layer().weight, m.get_base_layer().weight.detach().clone()) for m in layers]
    with merged_weights(engine.model, "ckpt1") as model:
        merged = layers[0].get_base_layer().weight
        assert merged is not before[0][0]
        delta = layers[0].get_delta_weight("ckpt1")
        assert torch.allclose(merged, before[0][1] + delta) and delta.abs().max() > 1e-3
        assert all(m.disable_adapters for m in layers)  # only the merged base weights act
        assert model is engine.model
    assert all(m.get_base_layer().weight is w and torch.equal(w, copy) for m, (w, copy) in zip(layers, before))
    assert not any(m.disable_adapters or m.merged for m in layers)
    outs = engine.generate(CHATS, Sampling(n=2, temperature=0.7, max_new_tokens=10), seeds=[[i, i + 9] for i in range(3)], adapter=adapter)
    flat = [c for row in outs for c in row]
    scores = engine.score([c for c in CHATS for _ in range(2)], [c.token_ids for c in flat], adapter=adapter)
    for c, s in zip(flat, scores):
        assert max(abs(a - b) for a, b in zip(c.policy_logprobs, s)) < 1e-4


def test_a_broken_adapter_is_refused(tiny_model, engine: HFEngine, tmp_path: Path) -> None:
    adapter = make_adapter(tiny_model.path, tmp_path / "bad", seed=2, checkpoint_id=77)
    weights = adapter.path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-3])
    with pytest.raises(CheckpointError, match="adapter_model.safetensors: truncated"):
        engine.generate(CHATS[:1], Sampling(max_new_tokens=2), adapter=adapter)


def test_next_token_logprobs_equal_the_last_scored_token(engine: HFEngine) -> None:
    """The distribution after chat + prefix, read at candidates, is what scoring prefix + candidate gives."""
    prefixes = [[], engine.tokenizer.encode("Score: ", add_special_tokens=False), [5, 6, 7, 8]]
    candidates = [10, 11, 12, 200]
    got = engine.next_token_logprobs(CHATS, prefixes, candidates)
    assert len(got) == 3 and all(len(row) == 4 for row in got)
    for chat, prefix, row in zip(CHATS, prefixes, got):
        for cand, lp in zip(candidates, row):
            scored = engine.score([chat], [prefix + [cand]])[0]
            assert lp == pytest.approx(scored[-1], abs=1e-4)
        assert all(lp < 0 for lp in row) and sum(math.exp(lp) for lp in row) < 1.0


def test_a_long_common_prefix_is_computed_once_with_the_same_results(engine: HFEngine, monkeypatch) -> None:
    """A rubric-like prefix shared by every prompt: one prefill of it, then the rows' own tokens. Greedy
    tokens and their log-probs, and next-token distributions, match the plain left-padded prefill."""
    from selfloop.models import logprobs

    rubric = "Score the response below with the additive rubric. " * 12
    chats = [[{"role": "user", "content": rubric + tail}] for tail in ("What is 2 + 2?", "Name a colour.", "Hi")]
    calls = []
    forward = engine.base.forward
    monkeypatch.setattr(engine.base, "forward", lambda *a, **kw: calls.append(kw["input_ids"].shape) or forward(*a, **kw))
    shared = engine.generate(chats, Sampling(temperature=0.0, max_new_tokens=6))
    dist_shared = engine.next_token_logprobs(chats, [[], [], [5]], [10, 11, 12])
    assert calls[0][0] == 1 and calls[0][1] >= logprobs.MIN_SHARED_PREFIX  # the prefix alone, once
    monkeypatch.setattr(logprobs, "MIN_SHARED_PREFIX", 10**9)
    plain = engine.generate(chats, Sampling(temperature=0.0, max_new_tokens=6))
    dist_plain = engine.next_token_logprobs(chats, [[], [], [5]], [10, 11, 12])
    for a, b in zip(shared, plain):
        assert a[0].token_ids == b[0].token_ids
        assert max(abs(x - y) for x, y in zip(a[0].token_logprobs, b[0].token_logprobs)) < 1e-4
    assert max(abs(x - y) for ra, rb in zip(dist_shared, dist_plain) for x, y in zip(ra, rb)) < 1e-4


@pytest.mark.parametrize("rubric", ["", "Score the response below with the additive rubric. " * 12])
def test_a_long_batch_prefills_in_chunks_of_rows_with_the_same_results(engine: HFEngine, monkeypatch, rubric) -> None:
    """Past PREFILL_TOKENS own tokens the prefill runs in near-equal chunks of rows, each padded to the whole
    batch's width, and joins their caches: the same logits, cache, mask and positions as one forward, and so the
    same greedy tokens, sampled tokens (n > 1: rows copied from the joined cache) and next-token distributions,
    with or without a shared prefix."""
    from selfloop.engines.chat import prompt_ids
    from selfloop.models import logprobs

    monkeypatch.setattr(engine, "batch_size", 16)  # one batch: the chunks are the prefill's, not the engine's
    tails = ["What is 2 + 2?", "Name a colour.", "Hi", "Tell me about the sea and the sky in one line.", "Why?"]
    chats = [[{"role": "user", "content": rubric + tail}] for tail in tails]
    greedy, sampled = Sampling(temperature=0.0, max_new_tokens=6), Sampling(n=2, temperature=1.0, max_new_tokens=6)
    seeds = [[i, i + 100] for i in range(len(chats))]
    prefixes = [[], [5], [], [6, 7], []]
    seqs = [prompt_ids(engine.tokenizer, chat) for chat in chats]
    shared = logprobs.shared_prefix_length(seqs)
    assert (shared > 0) == bool(rubric)
    width = max(len(s) for s in seqs) - shared
    with torch.inference_mode():
        one, one_mask, one_positions = logprobs.prefill(engine.base, seqs, engine.pad_id, use_cache=True)
    whole = (engine.generate(chats, greedy), engine.generate(chats, sampled, seeds=seeds),
             engine.next_token_logprobs(chats, prefixes, [10, 11, 12]))

    monkeypatch.setattr(logprobs, "PREFILL_TOKENS", 2 * width)  # 5 rows -> chunks of ceil(5 / 3) = 2, 2, 1
    calls = []
    forward = engine.base.forward
    monkeypatch.setattr(engine.base, "forward", lambda *a, **kw: calls.append(kw["input_ids"].shape) or forward(*a, **kw))
    with torch.inference_mode():
        out, mask, positions = logprobs.prefill(engine.base, seqs, engine.pad_id, use_cache=True)
    assert [tuple(c) for c in calls] == [(1, shared)] * bool(shared) + [(2, width), (2, width), (1, width)]
    assert torch.equal(mask, one_mask) and torch.equal(positions, one_positions)
    assert torch.allclose(out.logits, one.logits, atol=1e-5)
    for ours, theirs in zip(out.past_key_values.layers, one.past_key_values.layers, strict=True):
        assert ours.keys.shape == theirs.keys.shape and torch.allclose(ours.keys, theirs.keys, atol=1e-5)
        assert torch.allclose(ours.values, theirs.values, atol=1e-5)

    chunked = (engine.generate(chats, greedy), engine.generate(chats, sampled, seeds=seeds),
               engine.next_token_logprobs(chats, prefixes, [10, 11, 12]))
    for a_rows, b_rows in zip(whole[:2], chunked[:2]):
        for a, b in zip(a_rows, b_rows):
            for x, y in zip(a, b):
                assert x.token_ids == y.token_ids
                assert max(abs(p - q) for p, q in zip(x.token_logprobs, y.token_logprobs)) < 1e-4
    assert max(abs(x - y) for ra, rb in zip(whole[2], chunked[2]) for x, y in zip(ra, rb)) < 1e-4


def test_a_batch_under_the_prefill_budget_is_one_forward(engine: HFEngine, monkeypatch) -> None:
    """The labs' evaluation batches (128 rows of short prompts) stay one forward: their sums are unchanged."""
    from selfloop.models import logprobs

    monkeypatch.setattr(engine, "batch_size", 128)
    calls = []
    forward = engine.base.forward
    monkeypatch.setattr(engine.base, "forward", lambda *a, **kw: calls.append(kw["input_ids"].shape) or forward(*a, **kw))
    chats = [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(128)]
    engine.next_token_logprobs(chats, [[]] * 128, [10])
    assert len(calls) == 1 and calls[0][0] == 128 and 128 * calls[0][1] <= logprobs.PREFILL_TOKENS


@pytest.mark.parametrize("adapter_seed", [None, 3])
def test_generate_and_score_reads_each_follow_up_from_the_decoding_cache(engine: HFEngine, monkeypatch, tmp_path,
                                                                        tiny_model, adapter_seed) -> None:
    """Each completion's follow-up log-probs, read from its own decoding cache as it finishes, are what a fresh
    `next_token_logprobs` over the chat and the follow-up tokens gives; the completions are `generate`'s own. Rows
    end at different steps (the end token, a stop string, the length cap), follow-ups keep a part of the generated
    tokens, none of them, or all but the last, and no second prefill of the chats runs."""
    from selfloop.engines.base import FollowUp

    adapter = make_adapter(tiny_model.path, tmp_path / "a", seed=adapter_seed, checkpoint_id=90) if adapter_seed else None
    monkeypatch.setattr(engine, "batch_size", 16)
    chats = [[{"role": "user", "content": text}] for text in ("Hi", "Tell me a story about the sea " * 3, "Why?")]
    def tokens(completion) -> list[int]:  # per completion: some generated tokens kept, then tokens of its own
        kind = completion.seed % 3
        if kind == 0:
            return completion.token_ids[:3] + [7, 8]
        if kind == 1:
            return [9] + completion.token_ids[:2]
        return completion.token_ids[:5] or [11]

    follow = FollowUp(tokens, (10, 11, 12, 200))
    sampling = Sampling(n=3, temperature=1.0, max_new_tokens=9, stop=("e",))
    seeds = [[i * 10 + j for j in range(3)] for i in range(3)]
    plain = engine.generate(chats, sampling, seeds=seeds, adapter=adapter)
    calls = []
    forward = engine.base.forward
    monkeypatch.setattr(engine.base, "forward", lambda *a, **kw: calls.append(kw["input_ids"].shape) or forward(*a, **kw))
    read = engine.generate_and_score(chats, sampling, follow, seeds=seeds, adapter=adapter)
    monkeypatch.undo()
    from selfloop.engines.chat import prompt_ids

    longest = max(len(prompt_ids(engine.tokenizer, chat)) for chat in chats)
    assert [shape[1] for shape in calls if shape[1] > 5] == [longest]  # the chats' one prefill; follow-ups are short
    assert {c.finish_reason for row in read for c in row} == {"stop", "length"}
    for chat, ours, theirs in zip(chats, read, plain, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            assert a.token_ids == b.token_ids and a.token_logprobs == b.token_logprobs and a.text == b.text
            expected = engine.next_token_logprobs([chat], [tokens(a)], follow.candidates, adapter=adapter)[0]
            assert a.follow_logprobs is not None and b.follow_logprobs is None
            assert max(abs(x - y) for x, y in zip(a.follow_logprobs, expected)) < 1e-4


def test_generate_and_score_with_nothing_to_decode_reads_after_the_chat(engine: HFEngine) -> None:
    from selfloop.engines.base import FollowUp

    chats = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "Why?"}]]
    out = engine.generate_and_score(chats, Sampling(max_new_tokens=0), FollowUp(lambda c: [5, 6], (10, 11)))
    expected = engine.next_token_logprobs(chats, [[5, 6], [5, 6]], [10, 11])
    for row, want in zip(out, expected):
        assert row[0].token_ids == [] and max(abs(x - y) for x, y in zip(row[0].follow_logprobs, want)) < 1e-5


def test_shared_prefix_length() -> None:
    from selfloop.models.logprobs import MIN_SHARED_PREFIX, shared_prefix_length

    long = list(range(MIN_SHARED_PREFIX + 5))
    assert shared_prefix_length([long + [1], long + [2, 3]]) == len(long)
    assert shared_prefix_length([long, long]) == len(long) - 1  # every row keeps a token of its own
    assert shared_prefix_length([long + [1]]) == 0  # one row: nothing to share
    assert shared_prefix_length([[1] + long, [2] + long]) == 0
    assert shared_prefix_length([long[:10] + [1], long[:10] + [2]]) == 0  # too short to be worth it


def test_grouped_decode_attention_matches_transformers_sdpa(engine: HFEngine) -> None:
    """Decode steps attend per KV group instead of repeating the KV heads: the same tokens and log-probs
    (within float noise) as transformers' own SDPA path, on left-padded prompts of different lengths."""
    from selfloop.models import attention

    assert engine.base.config._attn_implementation == attention.NAME
    chats = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "Tell me a long story about " * 5}]]
    sampling = Sampling(n=3, temperature=1.0, max_new_tokens=12)
    seeds = [[1, 2, 3], [4, 5, 6]]
    used = []
    grouped = attention.grouped_decode_attention
    from transformers import AttentionInterface

    AttentionInterface.register(attention.NAME, lambda m, q, *a, **kw: used.append(q.shape[2]) or grouped(m, q, *a, **kw))
    try:
        ours = engine.generate(chats, sampling, seeds=seeds)
    finally:
        attention.register()
    assert 1 in used and any(n > 1 for n in used)  # decode steps and the prefill both went through it
    engine.base.config._attn_implementation = "sdpa"
    try:
        theirs = engine.generate(chats, sampling, seeds=seeds)
    finally:
        engine.base.config._attn_implementation = attention.NAME
    for a, b in zip([c for row in ours for c in row], [c for row in theirs for c in row]):
        assert a.token_ids == b.token_ids
        assert max(abs(x - y) for x, y in zip(a.token_logprobs, b.token_logprobs)) < 1e-4


def test_generate_then_score_the_vllm_engines_way_reads_what_the_cache_reads(engine: HFEngine) -> None:
    """The vLLM engines' generate_and_score (generate, then one next_token_logprobs call over every completion),
    run on this engine: the same completions and follow-up log-probs as reading them from the decoding cache."""
    from selfloop.engines.base import FollowUp, generate_then_score

    chats = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "Tell me a story about the sea " * 3}]]
    follow = FollowUp(lambda c: c.token_ids[:2] + [7], (10, 11, 12))
    sampling = Sampling(n=2, temperature=1.0, max_new_tokens=6)
    seeds = [[1, 2], [3, 4]]
    cached = engine.generate_and_score(chats, sampling, follow, seeds=seeds)
    composed = generate_then_score(engine, chats, sampling, follow, seeds=seeds)
    for a_row, b_row in zip(cached, composed, strict=True):
        for a, b in zip(a_row, b_row, strict=True):
            assert a.token_ids == b.token_ids
            assert max(abs(x - y) for x, y in zip(a.follow_logprobs, b.follow_logprobs)) < 1e-4

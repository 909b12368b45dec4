"""The transformers engine: batched decoding with a KV cache on any device (the CPU path).

Decoding is a short loop of our own rather than `model.generate`, for two reasons the loop needs:
every completion is sampled with its own seeded generator, so a re-run after a crash reproduces
exactly the samples of the uninterrupted run whatever the batching; and the log-probability of each
sampled token is taken from the very distribution it was drawn from (and, at no extra forward pass,
under the policy itself at temperature 1, which training uses as its reference). Sequences that finish leave
the batch (their rows are dropped from the KV cache), a prompt's n samples share one prefill, a prefix
common to every prompt of a batch (a judge's rubric, a system turn) is computed once, and an adapter is
folded into the weights while its policy decodes.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from selfloop.adapters import Adapter, verify_checkpoint
from selfloop.engines.base import Chat, Completion, FollowUp, GenerationStats, ProgressFn, Sampling
from selfloop.engines.chat import prompt_ids
from selfloop.models.loading import end_token_ids, load_causal_lm, load_tokenizer, pick_device, pick_dtype
from selfloop.models.logprobs import (
    completion_logprobs,
    completion_token_stats,
    distribution_stats,
    last_token_states,
    next_token_logprobs,
    prefill,
)

if TYPE_CHECKING:
    from peft import PeftModel

MAX_LOADED_ADAPTERS = 3


def sample_next(
    logits: torch.Tensor, sampling: Sampling, generators: Sequence[torch.Generator | None]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw one token per row; return (tokens, their log-probs under the distribution drawn from,
    their log-probs under the policy itself: temperature 1, nothing filtered)."""
    logits = logits.float()
    if sampling.temperature == 0:
        logps = torch.log_softmax(logits, dim=-1)
        tokens = logps.argmax(dim=-1)
        picked = logps.gather(-1, tokens[:, None]).squeeze(-1)
        return tokens, picked, picked
    plain = sampling.temperature == 1 and not sampling.top_k and sampling.top_p >= 1.0
    scores = logits / sampling.temperature
    if sampling.top_k:
        kth = torch.topk(scores, min(sampling.top_k, scores.shape[-1]), dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
        cum = torch.softmax(sorted_scores, dim=-1).cumsum(-1)
        drop_sorted = (cum - torch.softmax(sorted_scores, dim=-1)) >= sampling.top_p  # mass before this token already enough
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    logps = torch.log_softmax(scores, dim=-1)
    probs = logps.exp()
    tokens = torch.empty(len(probs), dtype=torch.long, device=probs.device)
    for i, gen in enumerate(generators):
        tokens[i] = torch.multinomial(probs[i], 1, generator=gen)[0]
    picked = logps.gather(-1, tokens[:, None]).squeeze(-1)
    if plain:
        return tokens, picked, picked
    policy = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
    return tokens, picked, policy


@contextmanager
def merged_weights(model: PeftModel, name: str) -> Iterator[None]:
    """Run `model` (a PeftModel) with adapter `name` folded into its base weights: W + scale * B @ A, what peft's
    merge computes, in new tensors that stand in for the base weights while the adapters are switched off. The
    base model's own tensors are put back untouched afterwards (merging and unmerging in place would leave
    rounding in them, and a resumed run would then start from other weights than an uninterrupted one).
    An adapter that is not plain LoRA on linear layers (DoRA, a LoRA bias) runs unmerged."""
    from peft.tuners.lora import Linear as LoraLinear

    from selfloop.models.fused_lora import is_plain_lora

    layers = [m for m in model.modules() if isinstance(m, LoraLinear) and name in m.lora_A]
    if not layers or not all(is_plain_lora(m, name) for m in layers):
        yield model
        return
    originals = [m.get_base_layer().weight for m in layers]
    try:
        for m, weight in zip(layers, originals):
            m.get_base_layer().weight = torch.nn.Parameter(weight + m.get_delta_weight(name), requires_grad=False)
        with model.disable_adapter():
            yield model
    finally:
        for m, weight in zip(layers, originals):
            m.get_base_layer().weight = weight


class HFEngine:
    name = "hf"

    def __init__(self, model_dir: Path, *, device: str = "auto", dtype: str = "auto", batch_size: int = 16) -> None:
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.tokenizer = load_tokenizer(model_dir)
        self.base = load_causal_lm(model_dir, self.device, self.dtype).eval()
        self.model: torch.nn.Module = self.base  # becomes a PeftModel once an adapter is loaded
        self.end_ids = end_token_ids(self.tokenizer, self.base.generation_config)
        self.pad_id = self.tokenizer.pad_token_id
        self.batch_size = batch_size
        self._adapters: OrderedDict[tuple[int, str], str] = OrderedDict()
        self.last_stats = GenerationStats()

    # -- adapters -----------------------------------------------------------------------------
    def _load_adapter(self, adapter: Adapter) -> str:
        from peft import PeftModel

        key = (adapter.checkpoint_id, adapter.sha256)
        if key in self._adapters:
            self._adapters.move_to_end(key)
            return self._adapters[key]
        verify_checkpoint(adapter.path, adapter.sha256)  # a broken checkpoint is refused, never loaded
        name = f"ckpt{adapter.checkpoint_id}"
        # Loaded outside inference mode whoever calls (scoring runs under it): an adapter's tensors made there are
        # inference tensors, and peft's next load_adapter, which sets requires_grad on every adapter, fails on them
        # (a run resumed at the curate phase first loads its policy to score).
        with torch.inference_mode(False):
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(adapter.path), adapter_name=name, is_trainable=False)
            else:
                self.model = PeftModel.from_pretrained(self.base, str(adapter.path), adapter_name=name, is_trainable=False)
        self.model.eval()
        self._adapters[key] = name
        while len(self._adapters) > MAX_LOADED_ADAPTERS:
            _, old = self._adapters.popitem(last=False)
            self.model.delete_adapter(old)
        return name

    @contextmanager
    def _policy(self, adapter: Adapter | None, *, merged: bool = False) -> Iterator[torch.nn.Module]:
        """The model as `adapter`'s policy (the base model for None). merged=True (decoding) folds the adapter
        into the weights for the duration: one matmul per layer instead of three."""
        from peft import PeftModel

        if adapter is not None:
            name = self._load_adapter(adapter)
            self.model.set_adapter(name)
            if merged:
                with merged_weights(self.model, name):
                    yield self.model
            else:
                yield self.model
        elif isinstance(self.model, PeftModel):
            with self.model.disable_adapter():
                yield self.model
        else:
            yield self.model

    # -- generation ---------------------------------------------------------------------------
    def generate(
        self,
        chats: Sequence[Chat],
        sampling: Sampling,
        *,
        seeds: Sequence[Sequence[int]] | None = None,
        adapter: Adapter | None = None,
        progress: ProgressFn | None = None,
    ) -> list[list[Completion]]:
        return self._generate(chats, sampling, seeds, adapter, progress, None)

    def generate_and_score(
        self,
        chats: Sequence[Chat],
        sampling: Sampling,
        follow: FollowUp,
        *,
        seeds: Sequence[Sequence[int]] | None = None,
        adapter: Adapter | None = None,
        progress: ProgressFn | None = None,
    ) -> list[list[Completion]]:
        """`generate`, each completion's follow-up read from its own decoding cache as it finishes: no second prefill
        of the chat (a judge's rubric, question and response) as `next_token_logprobs` would need."""
        return self._generate(chats, sampling, seeds, adapter, progress, follow)

    def _generate(self, chats: Sequence[Chat], sampling: Sampling, seeds: Sequence[Sequence[int]] | None,
                  adapter: Adapter | None, progress: ProgressFn | None, follow: FollowUp | None) -> list[list[Completion]]:
        started = time.monotonic()
        prompts = [prompt_ids(self.tokenizer, chat) for chat in chats]
        # One work item per completion; items of one prompt stay together so they share a prefill.
        items = [(i, j) for i in range(len(chats)) for j in range(sampling.n)]
        results: list[list[Completion | None]] = [[None] * sampling.n for _ in chats]
        tokens = 0
        with self._policy(adapter, merged=True) as model:
            for start in range(0, len(items), self.batch_size):
                batch = items[start : start + self.batch_size]
                batch_seeds = [seeds[i][j] if seeds is not None else None for i, j in batch]
                done = self._decode(model, [prompts[i] for i, _ in batch], batch_seeds, sampling, progress, follow)
                for (i, j), completion in zip(batch, done):
                    results[i][j] = completion
                    tokens += completion.num_tokens
        self.last_stats = GenerationStats(len(items), tokens, time.monotonic() - started)
        return results  # type: ignore[return-value]  # every slot is filled by now

    @torch.inference_mode()
    def _decode(
        self,
        model: torch.nn.Module,
        prompts: list[list[int]],
        seeds: list[int | None],
        sampling: Sampling,
        progress: ProgressFn | None,
        follow: FollowUp | None = None,
    ) -> list[Completion]:
        n = len(prompts)
        unique: dict[tuple[int, ...], int] = {}
        row_of = [unique.setdefault(tuple(p), len(unique)) for p in prompts]
        out, mask, positions = prefill(model, [list(p) for p in unique], self.pad_id, use_cache=True)
        cache = out.past_key_values
        select = torch.tensor(row_of, device=self.device)
        cache.batch_select_indices(select)  # each completion gets its own copy of its prompt's cache
        logits = out.logits[select, -1, :]
        mask, last_pos = mask[select], positions[select, -1]

        gens = []
        for seed in seeds:
            gen = None
            if seed is not None:
                gen = torch.Generator(device=self.device)
                gen.manual_seed(seed)
            gens.append(gen)
        toks: list[list[int]] = [[] for _ in range(n)]
        lps: list[list[float]] = [[] for _ in range(n)]
        policy_lps: list[list[float]] = [[] for _ in range(n)]
        entropies: list[list[float]] = [[] for _ in range(n)]
        certainties: list[list[float]] = [[] for _ in range(n)]
        finish: list[str | None] = [None] * n
        stop_at: list[int | None] = [None] * n
        built: list[Completion | None] = [None] * n  # with a follow-up: each row's completion, made as it finished
        active = list(range(n))
        for step in range(sampling.max_new_tokens):
            new_tokens, new_logps, new_policy = sample_next(logits, sampling, [gens[i] for i in active])
            new_list, lp_list, policy_list = new_tokens.tolist(), new_logps.tolist(), new_policy.tolist()
            if sampling.token_stats:  # the same logits: no forward pass, only vocabulary-wide sums
                step_entropy, step_certainty = (t.tolist() for t in distribution_stats(logits))
            keep = []
            for row, seq in enumerate(active):
                tok = new_list[row]
                toks[seq].append(tok)
                lps[seq].append(lp_list[row])
                policy_lps[seq].append(policy_list[row])
                if sampling.token_stats:
                    entropies[seq].append(round(step_entropy[row], 5))
                    certainties[seq].append(round(step_certainty[row], 5))
                if tok in self.end_ids:
                    finish[seq] = "stop"
                elif sampling.stop and (cut := self._stop_cut(toks[seq], sampling.stop)) is not None:
                    finish[seq], stop_at[seq] = "stop", cut
                elif step + 1 == sampling.max_new_tokens:
                    finish[seq] = "length"
                else:
                    keep.append(row)
            if follow is not None and len(keep) < len(active):  # read the finished rows' follow-ups before they leave
                staying = set(keep)
                ended = [row for row in range(len(active)) if row not in staying]
                completions = [self._completion(toks[active[r]], lps[active[r]], policy_lps[active[r]],
                                                finish[active[r]] or "length", stop_at[active[r]], seeds[active[r]])
                               for r in ended]
                self._follow_up(model, cache, mask, last_pos, step, ended, completions, follow, whole=not keep)
                for r, completion in zip(ended, completions):
                    built[active[r]] = completion
            if progress is not None:
                progress(len(active) - len(keep), len(active))
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask, last_pos, new_tokens = mask[index], last_pos[index], new_tokens[index]
                active = [active[r] for r in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            last_pos = last_pos + 1
            out = model(
                input_ids=new_tokens[:, None], attention_mask=mask, position_ids=last_pos[:, None],
                past_key_values=cache, use_cache=True,
            )
            logits = out.logits[:, -1, :]
        done = [built[i] or self._completion(toks[i], lps[i], policy_lps[i], finish[i] or "length", stop_at[i], seeds[i])
                for i in range(n)]
        if sampling.token_stats:
            for completion, entropy, certainty in zip(done, entropies, certainties, strict=True):
                completion.token_entropies, completion.token_self_certainties = entropy, certainty
        if follow is not None:
            unread = [i for i, c in enumerate(done) if c.follow_logprobs is None]  # nothing decoded (max_new_tokens 0)
            if unread:
                seqs = [list(prompts[i]) + follow.tokens(done[i]) for i in unread]
                for i, logprobs in zip(unread, next_token_logprobs(model, seqs, follow.candidates, self.pad_id).tolist()):
                    done[i].follow_logprobs = logprobs
        return done

    def _follow_up(self, model: torch.nn.Module, cache: Any, mask: torch.Tensor, last_pos: torch.Tensor, fed: int,
                   rows: list[int], completions: list[Completion], follow: FollowUp, *, whole: bool) -> None:
        """Set each finished row's `follow_logprobs` from the decoding's KV cache, which holds its prompt and its first
        `fed` generated tokens. The generated tokens that begin its follow-up tokens are kept, the rest masked out,
        and the follow-up's remaining tokens (at least its last) are fed after them, at the positions they continue;
        one forward for every row that finished at this step. `whole`: every row of the batch finished, and the cache,
        not needed again, is used in place; else the rows are copied out of it."""
        index = torch.tensor(rows, device=self.device)
        if whole:
            own = cache
        else:
            own = copy.copy(cache)
            own.layers = [copy.copy(layer) for layer in cache.layers]
            for layer in own.layers:
                layer.keys, layer.values = layer.keys[index], layer.values[index]
        kept_mask = mask[index].clone()
        prompt_width = mask.shape[1] - fed
        blocks, firsts = [], []
        for r, completion in enumerate(completions):
            want, have = follow.tokens(completion), completion.token_ids[:fed]
            if not want:
                raise ValueError("FollowUp.tokens: a follow-up needs at least one token")
            kept = 0
            while kept < min(len(have), len(want) - 1) and have[kept] == want[kept]:
                kept += 1
            kept_mask[r, prompt_width + kept:] = 0
            blocks.append(want[kept:])
            firsts.append(int(last_pos[rows[r]]) - fed + 1 + kept)  # generated token i sits at the prompt's last + 1 + i
        width = max(len(b) for b in blocks)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        block_mask = torch.zeros((len(rows), width), dtype=mask.dtype)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (block, first) in enumerate(zip(blocks, firsts)):
            ids[r, width - len(block):] = torch.tensor(block, dtype=torch.long)
            block_mask[r, width - len(block):] = 1
            positions[r, width - len(block):] = torch.arange(first, first + len(block))
        out = model(input_ids=ids.to(self.device), attention_mask=torch.cat([kept_mask, block_mask.to(self.device)], dim=1),
                    position_ids=positions.to(self.device), past_key_values=own, use_cache=True, logits_to_keep=1)
        logps = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)[:, torch.tensor(follow.candidates, device=self.device)]
        for completion, row in zip(completions, logps.tolist(), strict=True):
            completion.follow_logprobs = row

    def _stop_cut(self, tokens: list[int], stops: tuple[str, ...]) -> int | None:
        """Character offset where a stop string begins in the decoded text, if one has appeared."""
        tail = self.tokenizer.decode(tokens[-16:], skip_special_tokens=True)
        if not any(s in tail for s in stops):
            return None
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        found = [text.find(s) for s in stops if s in text]
        return min(found) if found else None

    def _completion(self, tokens: list[int], logps: list[float], policy_logps: list[float], finish: str, cut: int | None,
                    seed: int | None) -> Completion:
        body = tokens[:-1] if tokens and tokens[-1] in self.end_ids else tokens
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        if cut is not None:
            text = text[:cut]
        return Completion(text=text, token_ids=tokens, token_logprobs=logps, finish_reason=finish, seed=seed,
                          policy_logprobs=policy_logps)

    # -- scoring ------------------------------------------------------------------------------
    @torch.inference_mode()
    def score(
        self, chats: Sequence[Chat], completions: Sequence[Sequence[int]], *, adapter: Adapter | None = None
    ) -> list[list[float]]:
        prompts = [prompt_ids(self.tokenizer, chat) for chat in chats]
        out: list[list[float]] = []
        with self._policy(adapter) as model:
            for start in range(0, len(prompts), self.batch_size):
                rows = completion_logprobs(
                    model, prompts[start : start + self.batch_size], completions[start : start + self.batch_size], self.pad_id
                )
                out.extend(r.tolist() for r in rows)
        return out

    @torch.inference_mode()
    def next_token_logprobs(
        self, chats: Sequence[Chat], prefixes: Sequence[Sequence[int]], candidates: Sequence[int], *,
        adapter: Adapter | None = None,
    ) -> list[list[float]]:
        seqs = [prompt_ids(self.tokenizer, chat) + list(prefix) for chat, prefix in zip(chats, prefixes, strict=True)]
        out: list[list[float]] = []
        with self._policy(adapter) as model:
            for start in range(0, len(seqs), self.batch_size):
                out.extend(next_token_logprobs(model, seqs[start : start + self.batch_size], candidates, self.pad_id).tolist())
        return out

    @torch.inference_mode()
    def token_stats(self, chats: Sequence[Chat], completions: Sequence[Sequence[int]], *,
                    adapter: Adapter | None = None) -> list[tuple[list[float], list[float]]]:
        """Each completion token's next-token entropy and self-certainty, teacher-forced under `adapter`'s policy."""
        prompts = [prompt_ids(self.tokenizer, chat) for chat in chats]
        out: list[tuple[list[float], list[float]]] = []
        with self._policy(adapter) as model:
            for start in range(0, len(prompts), self.batch_size):
                out.extend(completion_token_stats(model, prompts[start : start + self.batch_size],
                                                  completions[start : start + self.batch_size], self.pad_id))
        return out

    @torch.inference_mode()
    def embed(self, chats: Sequence[Chat], *, adapter: Adapter | None = None) -> list[list[float]]:
        seqs = [prompt_ids(self.tokenizer, chat) for chat in chats]
        out: list[list[float]] = []
        with self._policy(adapter) as model:
            for start in range(0, len(seqs), self.batch_size):
                out.extend(last_token_states(model, seqs[start : start + self.batch_size], self.pad_id).tolist())
        return out

    def sleep(self) -> None:
        if self.device.type == "cuda":
            self.base.to("cpu")
            torch.cuda.empty_cache()

    def wake(self) -> None:
        if self.device.type == "cuda":
            self.base.to(self.device)

    def close(self) -> None:
        self.model = self.base = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

"""Log-probabilities of completions under a causal LM: left-padded batches for engines and judges, packed rows for training."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch


def left_padded(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids) with every sequence ending at the last column."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def completion_logprobs(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    pad_id: int,
) -> list[torch.Tensor]:
    """Per-token log p(completion token | prompt, earlier tokens) at temperature 1, one tensor per row.

    Sequences are left-padded so every completion ends at the last column; only the last
    max(len(completion)) + 1 positions' logits are computed (the prompt's are never needed).
    Gradients flow when the caller has them enabled (training); engines call it under inference_mode.
    """
    device = next(model.parameters()).device
    seqs = [list(p) + list(c) for p, c in zip(prompts, completions, strict=True)]
    ids, mask, positions = left_padded(seqs, pad_id, device)
    longest = max(len(c) for c in completions)
    if longest == 0:
        return [torch.zeros(0, device=device) for _ in completions]
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=longest + 1, use_cache=False)
    logits = out.logits[:, :-1, :].float()  # row t predicts token t+1
    targets = ids[:, -longest:]
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    logps = picked - torch.logsumexp(logits, dim=-1)
    return [logps[i, longest - len(c):] for i, c in enumerate(completions)]


def packed_completion_logprobs(
    model: torch.nn.Module, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *,
    last_hidden: bool = False,
) -> list[torch.Tensor] | tuple[list[torch.Tensor], torch.Tensor]:
    """What `completion_logprobs` computes, with the sequences packed into one row instead of padded (training).

    No position is spent on padding: the row holds the batch's tokens, position ids restart at every sequence,
    and the sequence boundaries go to the attention as `cu_seq_lens_q` (transformers' name for them; selfloop's
    attention runs each sequence causally on its own). A prefix that every prompt starts with (a chat template's
    system turn) is in the row once, first, and every sequence attends to it (`shared_prefix`): gradients from
    all sequences meet there, as they would in separate copies. Logits are computed only at the positions that
    predict a completion token. The values equal the padded computation's up to floating-point rounding.
    With `last_hidden`, also the last layer's hidden state (after the final norm) at each sequence's last token,
    an (n, hidden) tensor (CoIN's sentence representation).
    """
    device = next(model.parameters()).device
    _require_prompts(prompts)
    if not any(completions) and not last_hidden:
        return [torch.zeros(0, device=device) for _ in completions]
    logits, targets, hidden = _packed_forward(model, prompts, completions, last_hidden=last_hidden)
    logps = logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    rows = list(logps.split([len(c) for c in completions]))
    if not last_hidden:
        return rows
    return rows, cast(torch.Tensor, hidden)  # asked for: never None


def packed_completion_entropies(model: torch.nn.Module, prompts: Sequence[Sequence[int]],
                                completions: Sequence[Sequence[int]], temperature: float = 1.0) -> list[torch.Tensor]:
    """The entropy H(p_t) = -sum_j p_t(j) log p_t(j) (nats) of the policy's next-token distribution at every
    completion token's position, teacher-forced and packed as `packed_completion_logprobs` packs (gradients flow):
    one tensor per row. `temperature` divides the logits first (one-shot EM's tau; 1 is the distribution itself)."""
    device = next(model.parameters()).device
    _require_prompts(prompts)
    if not any(completions):
        return [torch.zeros(0, device=device) for _ in completions]
    logits, _, _ = _packed_forward(model, prompts, completions)
    logp = torch.log_softmax(logits / temperature, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return list(entropy.split([len(c) for c in completions]))


def _require_prompts(prompts: Sequence[Sequence[int]]) -> None:
    if any(len(p) == 0 for p in prompts):
        raise ValueError("packed_completion_logprobs: every prompt needs at least one token")


def _packed_forward(model: torch.nn.Module, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *,
                    last_hidden: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One packed forward (see `packed_completion_logprobs`): the float32 logits at each position that predicts a
    completion token, in order (tokens, vocabulary), those tokens, and with `last_hidden` each sequence's
    last-token hidden state."""
    device = next(model.parameters()).device
    shared = shared_prefix_length(prompts)  # 0, or short of every prompt's end: each predicts its own first token
    ids: list[int] = list(prompts[0][:shared])
    positions: list[int] = list(range(shared))
    keep: list[int] = []  # the position that predicts each completion token
    bounds = [0, shared] if shared else [0]
    for p, c in zip(prompts, completions, strict=True):
        start, own = len(ids), len(p) - shared
        ids += [*p[shared:], *c]
        positions += range(shared, len(p) + len(c))
        keep += range(start + own - 1, start + own + len(c) - 1)
        bounds.append(len(ids))
    targets = torch.tensor([t for c in completions for t in c], dtype=torch.long, device=device)
    out = model(
        input_ids=torch.tensor([ids], device=device), position_ids=torch.tensor([positions], device=device),
        cu_seq_lens_q=torch.tensor(bounds, dtype=torch.int32, device=device), shared_prefix=shared,
        logits_to_keep=torch.tensor(keep, device=device), use_cache=False, output_hidden_states=last_hidden,
    )
    if not last_hidden:
        return out.logits[0].float(), targets, None
    ends = torch.tensor([b - 1 for b in bounds[2 if shared else 1:]], device=device)  # each sequence's last token
    return out.logits[0].float(), targets, out.hidden_states[-1][0, ends].float()


# A prefix shared by every sequence of a batch is computed once when it is at least this long: a judge's
# rubric (~200 tokens), or a chat template's system turn (SmolLM2's default: 27 of the ~39 tokens of an
# arithmetic prompt, so an evaluation's prefill shrinks to a third). Below it the extra call is not worth it.
MIN_SHARED_PREFIX = 16


def shared_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """Tokens every sequence starts with, leaving each at least one token of its own (0 when below MIN_SHARED_PREFIX)."""
    if len(seqs) < 2:
        return 0
    first, n = seqs[0], min(len(s) for s in seqs) - 1
    length = 0
    while length < n and all(s[length] == first[length] for s in seqs):
        length += 1
    return length if length >= MIN_SHARED_PREFIX else 0


# A prefill forward over more than this many of the rows' own tokens runs in chunks of rows. On the 2-core CPU one
# forward over a judge's 128 rows x ~150 own tokens ran 1.5x slower than the same rows in three chunks (its
# activations outgrow the caches). Below it nothing changes: every evaluation and rollout batch of the labs' prompts
# (own parts of 13-40 tokens, 128 rows) stays one forward, so their float32 sums, and greedy answers, are as before.
PREFILL_TOKENS = 8192


@dataclass
class Prefilled:
    """A prefill's result: the last position's logits (rows, 1, vocabulary) and, with use_cache, the KV cache."""

    logits: torch.Tensor
    past_key_values: Any = None


def prefill(model: torch.nn.Module, seqs: Sequence[Sequence[int]], pad_id: int, *, use_cache: bool
            ) -> tuple[Prefilled, torch.Tensor, torch.Tensor]:
    """Forward over left-padded sequences keeping the last position's logits: (output, attention mask,
    position ids). A long common prefix is computed once and its cache repeated for every row; the
    rows' own tokens follow, left-padded after it (masked), with positions that continue the prefix.
    More than PREFILL_TOKENS own tokens (rows x the longest own part) go through in near-equal chunks of rows,
    every chunk padded to the whole batch's width, and their caches are joined row-wise."""
    device = next(model.parameters()).device
    shared = shared_prefix_length(seqs)
    ids, own_mask, own_positions = left_padded([s[shared:] for s in seqs], pad_id, device)
    rows, width = ids.shape
    chunks = -(-rows * width // PREFILL_TOKENS)  # ceil
    step = -(-rows // chunks)
    head = None
    if shared:
        head = model(input_ids=torch.tensor([list(seqs[0][:shared])], dtype=torch.long, device=device), use_cache=True,
                     logits_to_keep=1).past_key_values
    mask = torch.cat([own_mask.new_ones((rows, shared)), own_mask], dim=1)
    positions = own_positions + shared
    logits: list[torch.Tensor] = []
    caches: list[Any] = []
    for start in range(0, rows, step):
        part = slice(start, start + step)
        prefix: Any = None
        if head is not None:
            prefix = copy.deepcopy(head) if start + step < rows else head  # the last chunk takes the prefix's own
            prefix.batch_repeat_interleave(len(ids[part]))
        out = model(input_ids=ids[part], attention_mask=mask[part], position_ids=positions[part], past_key_values=prefix,
                    use_cache=use_cache or prefix is not None, logits_to_keep=1)
        logits.append(out.logits)
        caches.append(out.past_key_values)
    cache = caches[0] if use_cache else None
    if cache is not None and len(caches) > 1:
        for index, layer in enumerate(cache.layers):
            layer.keys = torch.cat([c.layers[index].keys for c in caches])
            layer.values = torch.cat([c.layers[index].values for c in caches])
    if shared:
        positions = torch.cat([torch.arange(shared, device=device).expand(rows, -1), positions], dim=1)
    return Prefilled(torch.cat(logits) if len(logits) > 1 else logits[0], cache), mask, positions


def next_token_logprobs(
    model: torch.nn.Module, seqs: Sequence[Sequence[int]], candidates: Sequence[int], pad_id: int
) -> torch.Tensor:
    """log p(token | seq) at temperature 1 for every candidate token after every sequence: (rows, candidates)."""
    out, _, _ = prefill(model, seqs, pad_id, use_cache=False)
    logps = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
    return logps[:, torch.tensor(list(candidates), device=logps.device)]


def last_token_states(model: torch.nn.Module, seqs: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """The last layer's hidden state at each sequence's last token, (rows, hidden) in float32 (the sentence
    embedding of DEITA's and MoDS's selection; left padding puts every last token in the last column)."""
    device = next(model.parameters()).device
    ids, mask, positions = left_padded(seqs, pad_id, device)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=1,
                output_hidden_states=True)
    return out.hidden_states[-1][:, -1].float()


def distribution_stats(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of next-token logits (temperature 1, nothing filtered): (the entropy H(p) = -sum_j p_j log p_j, in nats;
    the self-certainty logsumexp(z) - mean_j z_j = -mean_j log p_j = KL(U || p) + log V, Intuitor's per-token score
    without its constant log V, which no advantage or ranking sees)."""
    z = logits.float()
    logp = torch.log_softmax(z, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    certainty = torch.logsumexp(z, dim=-1) - z.mean(-1)
    return entropy, certainty


def completion_token_stats(
    model: torch.nn.Module, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int,
) -> list[tuple[list[float], list[float]]]:
    """`distribution_stats` at every completion token's position, teacher-forced: for samples whose engine did not
    record them while sampling (the vLLM engines)."""
    device = next(model.parameters()).device
    seqs = [list(p) + list(c) for p, c in zip(prompts, completions, strict=True)]
    ids, mask, positions = left_padded(seqs, pad_id, device)
    longest = max((len(c) for c in completions), default=0)
    if longest == 0:
        return [([], []) for _ in completions]
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=longest + 1, use_cache=False)
    entropy, certainty = distribution_stats(out.logits[:, :-1, :])
    return [(entropy[i, longest - len(c):].tolist(), certainty[i, longest - len(c):].tolist())
            for i, c in enumerate(completions)]

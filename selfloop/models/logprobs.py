"""Log-probabilities of completions under a causal LM: one function for engines, judges and training."""

from __future__ import annotations

from collections.abc import Sequence

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


def next_token_logprobs(
    model: torch.nn.Module, seqs: Sequence[Sequence[int]], candidates: Sequence[int], pad_id: int
) -> torch.Tensor:
    """log p(token | seq) at temperature 1 for every candidate token after every sequence: (rows, candidates)."""
    device = next(model.parameters()).device
    ids, mask, positions = left_padded(seqs, pad_id, device)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1, use_cache=False).logits[:, -1, :].float()
    logps = torch.log_softmax(logits, dim=-1)
    return logps[:, torch.tensor(list(candidates), device=device)]

"""selfloop's attention: grouped-query decoding without copying the KV cache, and packed training rows.

transformers' SDPA path repeats each key/value head for its query heads (`repeat_kv`, a copy) whenever
an attention mask is given, and decoding left-padded batches always has one. At a decode step that copy
is the whole cache, several times over (SmolLM2: 3 KV heads serve 9 query heads): at 128 rows and a
judge's 400-token contexts, ~7 GB of memory traffic per step, far more than the step's matmuls. With a
single query position, the g query heads of a group can stand in for g query positions against their
one KV head instead: the same softmax(q k^T) v per head, through the same SDPA kernel, and no copy.
Sequences packed into one row (training; `cu_seq_lens_q` gives their boundaries) attend each to itself, and to
a prefix they all share (`shared_prefix`), which the row holds once.
Anything else (prefill: several query positions) goes to transformers' SDPA unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "selfloop_sdpa"


def grouped_decode_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                             **kwargs: Any) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    if kwargs.get("cu_seq_lens_q") is not None and query.shape[0] == 1:
        return packed_attention(query, key, value, kwargs["cu_seq_lens_q"], groups, dropout, scaling, kwargs.get("shared_prefix", 0))
    if query.shape[2] != 1 or groups == 1 or dropout or kwargs.get("output_attentions"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    batch, heads, _, dim = query.shape
    grouped = query.view(batch, heads // groups, groups, dim)  # query heads h = kv * groups + j
    mask = attention_mask[:, :, :, : key.shape[2]] if attention_mask is not None else None  # (batch, 1, 1, kv)
    out = torch.nn.functional.scaled_dot_product_attention(grouped, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


def packed_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bounds: torch.Tensor, groups: int,
                     dropout: float, scaling: float | None, shared: int = 0) -> torch.Tensor:
    """Causal attention of sequences packed in one row (training): each sequence [a, b) attends to itself only,
    through SDPA, so no work goes to the (masked) pairs of different sequences, as it would with one
    block-diagonal mask over the whole row. With `shared` > 0 the row starts with a prefix of that length
    (the first segment) that every later sequence also attends to, as if it were its own beginning."""
    edges = bounds.tolist()
    outs = []
    for index, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        k, v, mask = key[:, :, a:b], value[:, :, a:b], None
        if shared and index > 0:  # keys: the prefix, then the sequence's own; causal from the prefix's end
            k, v = torch.cat([key[:, :, :shared], k], dim=2), torch.cat([value[:, :, :shared], v], dim=2)
            mask = torch.ones(b - a, shared + b - a, dtype=torch.bool, device=query.device).tril(diagonal=shared)
        if groups > 1:  # query head h reads KV head h // groups, as transformers' repeat_kv arranges them
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        outs.append(torch.nn.functional.scaled_dot_product_attention(
            query[:, :, a:b], k, v, attn_mask=mask, dropout_p=dropout, is_causal=mask is None, scale=scaling))
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None


def register() -> str:
    """Make NAME known to transformers (idempotent); models loaded with it use it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, grouped_decode_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME

"""Grouped-query attention for decoding without copying the KV cache.

transformers' SDPA path repeats each key/value head for its query heads (`repeat_kv`, a copy) whenever
an attention mask is given, and decoding left-padded batches always has one. At a decode step that copy
is the whole cache, several times over (SmolLM2: 3 KV heads serve 9 query heads): at 128 rows and a
judge's 400-token contexts, ~7 GB of memory traffic per step, far more than the step's matmuls. With a
single query position, the g query heads of a group can stand in for g query positions against their
one KV head instead: the same softmax(q k^T) v per head, through the same SDPA kernel, and no copy.
Anything else (prefill, training: several query positions) goes to transformers' SDPA unchanged.
"""

from __future__ import annotations

import torch

NAME = "selfloop_sdpa"


def grouped_decode_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):  # noqa: ANN001, ANN201
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    if query.shape[2] != 1 or groups == 1 or dropout or kwargs.get("output_attentions"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    batch, heads, _, dim = query.shape
    grouped = query.view(batch, heads // groups, groups, dim)  # query heads h = kv * groups + j
    mask = attention_mask[:, :, :, : key.shape[2]] if attention_mask is not None else None  # (batch, 1, 1, kv)
    out = torch.nn.functional.scaled_dot_product_attention(grouped, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


def register() -> str:
    """Make NAME known to transformers (idempotent); models loaded with it use it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, grouped_decode_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME

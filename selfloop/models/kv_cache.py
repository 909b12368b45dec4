"""A decoding KV cache that grows without copying itself.

transformers' `DynamicLayer` appends a step's key and value by `torch.cat`, which copies the whole cache, every
layer, every step: at an evaluation's 128 rows of 66 to 130 positions, about 0.6 GB copied per step on SmolLM2
(30 layers, 3 KV heads of 64), 18 % of the decode's time on a 2-core CPU (`bench/eval_decode.py`), and more at a
judge's longer contexts. `GrowingLayer`
holds each layer's keys and values in a buffer with room to spare along the sequence; a step writes its one position
in place and the layer exposes the filled part as a view. Attention reads the same numbers from the view as from a
fresh tensor and gave the same bits in every case tried (SDPA on CPU, decode and prefill shapes); a test holds the
engine to that, and `bench/eval_decode.py` checks it on a real evaluation. When the room runs out the buffer is
reallocated with new room: one copy, as `cat` made on every step.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicLayer


class GrowingLayer(DynamicLayer):
    """A `DynamicLayer` whose `keys` and `values` are views of the first `length` positions of larger buffers.

    `spare`: positions of room allocated past what is written, each time the buffer is (re)allocated."""

    def __init__(self, spare: int) -> None:
        super().__init__()
        if spare < 1:
            raise ValueError(f"GrowingLayer: spare must be at least 1, got {spare}")
        self.spare = spare
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None
        self.length = 0

    @classmethod
    def holding(cls, keys: torch.Tensor, values: torch.Tensor, spare: int) -> GrowingLayer:
        """A layer holding these keys and values (batch, heads, positions, dim), copied once into buffers with room."""
        layer = cls(spare)
        layer.dtype, layer.device, layer.is_initialized = keys.dtype, keys.device, True
        layer._place(keys, values)
        return layer

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.key_buffer is None or self.value_buffer is None:
            self._place(key_states, value_states)
            return self.keys, self.values
        end = self.length + key_states.shape[-2]
        if end > self.key_buffer.shape[-2]:
            self._place(torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2))
            return self.keys, self.values
        self.key_buffer[..., self.length : end, :].copy_(key_states)
        self.value_buffer[..., self.length : end, :].copy_(value_states)
        self._expose(self.key_buffer, self.value_buffer, end)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:  # the legacy meaning: the length to keep
            tokens_to_remove = max(self.length - tokens_to_remove, 0)
        if self.key_buffer is not None and self.value_buffer is not None:
            self._expose(self.key_buffer, self.value_buffer, self.length - abs(tokens_to_remove))

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.key_buffer is not None and self.value_buffer is not None:
            self._expose(self.key_buffer.repeat_interleave(repeats, dim=0),
                         self.value_buffer.repeat_interleave(repeats, dim=0), self.length)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep these rows. The buffers are replaced, never written: a shallow copy of this layer (the engine reads a
        few rows' follow-ups from one) keeps the rows it had."""
        if self.key_buffer is not None and self.value_buffer is not None:
            self._expose(self.key_buffer[indices, ...], self.value_buffer[indices, ...], self.length)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx.to(self.device))

    def reset(self) -> None:
        self.key_buffer = self.value_buffer = None
        self.length = 0
        super().reset()

    def _place(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """New buffers holding these keys and values, with `spare` positions of room after them."""
        batch, heads, length, dim = keys.shape
        key_buffer = keys.new_empty((batch, heads, length + self.spare, dim))
        value_buffer = values.new_empty((batch, values.shape[1], length + self.spare, values.shape[-1]))
        key_buffer[..., :length, :].copy_(keys)
        value_buffer[..., :length, :].copy_(values)
        self._expose(key_buffer, value_buffer, length)

    def _expose(self, key_buffer: torch.Tensor, value_buffer: torch.Tensor, length: int) -> None:
        """Hold these buffers, their first `length` positions filled: `keys` and `values` are views of those."""
        self.key_buffer, self.value_buffer, self.length = key_buffer, value_buffer, length
        self.keys = key_buffer[..., :length, :]
        self.values = value_buffer[..., :length, :]


def growing(cache: Any, spare: int) -> Any:
    """`cache` with each of its plain `DynamicLayer`s replaced by a `GrowingLayer` holding the same keys and values
    (sliding-window, quantized and other layers are left as they are). Changes and returns `cache`."""
    cache.layers = [GrowingLayer.holding(layer.keys, layer.values, spare)
                    if type(layer) is DynamicLayer and layer.is_initialized and layer.keys is not None and layer.keys.dim() == 4
                    else layer for layer in cache.layers]
    return cache

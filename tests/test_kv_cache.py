"""The growing KV cache layer against transformers' DynamicLayer: the same keys and values after every operation
the decoding loop uses, and no write through one layer reaches another that shared its buffers."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from selfloop.models.kv_cache import GrowingLayer, growing


def states(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, length, 4, generator=gen), torch.randn(batch, 3, length, 4, generator=gen)


def same(a: DynamicLayer, b: DynamicLayer) -> bool:
    return a.get_seq_length() == b.get_seq_length() and torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_steps_rows_and_growth_past_the_spare_room_match_dynamic_layer() -> None:
    ours, theirs = GrowingLayer(spare=3), DynamicLayer()
    for layer in (ours, theirs):
        layer.update(*states(4, 7, 0))  # a prefill
    assert same(ours, theirs) and ours.key_buffer is not None and ours.key_buffer.shape[-2] == 10
    buffer = ours.key_buffer
    for step in range(3):  # decode steps inside the room: written in place, no new buffer
        returned = ours.update(*states(4, 1, step + 1))
        theirs.update(*states(4, 1, step + 1))
        assert same(ours, theirs) and torch.equal(returned[0], theirs.keys)
    assert ours.key_buffer is buffer and ours.get_seq_length() == 10
    ours.update(*states(4, 2, 9))  # past the room: a new buffer, with room again
    theirs.update(*states(4, 2, 9))
    assert same(ours, theirs) and ours.key_buffer is not buffer and ours.key_buffer.shape[-2] == 15
    index = torch.tensor([3, 1])
    ours.batch_select_indices(index)
    theirs.batch_select_indices(index)
    assert same(ours, theirs)
    ours.batch_repeat_interleave(2)
    theirs.batch_repeat_interleave(2)
    assert same(ours, theirs)
    ours.crop(-4)
    theirs.crop(-4)
    assert same(ours, theirs)
    for layer in (ours, theirs):  # after a crop, new positions overwrite the cropped ones
        layer.update(*states(4, 1, 20))
    assert same(ours, theirs)


def test_a_shallow_copys_row_selection_and_writes_leave_the_original_unchanged() -> None:
    """The engine reads finished rows' follow-ups from a shallow copy of the cache and feeds tokens through it; the
    rows that go on decoding must not see them."""
    layer = GrowingLayer(spare=8)
    layer.update(*states(3, 5, 0))
    assert layer.key_buffer is not None and layer.value_buffer is not None
    layer.key_buffer[..., 5:, :] = 0  # the spare room, made comparable
    layer.value_buffer[..., 5:, :] = 0
    before = (layer.keys.clone(), layer.values.clone())
    buffers = (layer.key_buffer.clone(), layer.value_buffer.clone())
    own = copy.copy(layer)
    own.batch_select_indices(torch.tensor([0, 2]))
    own.update(*states(2, 4, 1))
    assert torch.equal(layer.key_buffer, buffers[0]) and torch.equal(layer.value_buffer, buffers[1])
    assert torch.equal(layer.keys, before[0]) and torch.equal(layer.values, before[1]) and layer.get_seq_length() == 5
    assert own.get_seq_length() == 9 and torch.equal(own.keys[..., :5, :], before[0][[0, 2]])


def test_growing_replaces_only_plain_dynamic_layers() -> None:
    cache = DynamicCache()
    for index in range(2):
        cache.update(*states(2, 5, index), layer_idx=index)
    keys = [layer.keys.clone() for layer in cache.layers]
    growing(cache, spare=4)
    assert all(type(layer) is GrowingLayer for layer in cache.layers)
    assert all(torch.equal(layer.keys, k) for layer, k in zip(cache.layers, keys, strict=True))
    assert cache.get_seq_length() == 5
    with pytest.raises(ValueError, match="spare must be at least 1"):
        GrowingLayer(spare=0)

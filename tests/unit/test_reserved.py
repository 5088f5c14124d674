"""The cache layer with room reserved: the keys and values of transformers' dynamic layer, written in place."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

from pytest_safeedit.backends.reserved import ReservedLayer, reserved_cache


def states(rows: int, tokens: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, tokens, 4, generator=generator), torch.randn(rows, 2, tokens, 4, generator=generator)


def test_updates_equal_the_dynamic_layers_and_stay_in_one_buffer() -> None:
    plain, reserved = DynamicLayer(), ReservedLayer(reserve=3)
    for step, tokens in enumerate([5, 1, 1, 1, 1, 1, 4]):  # the last two writes outgrow the room
        keys, values = states(3, tokens, step)
        want, got = plain.update(keys, values), reserved.update(keys, values)
        assert all(torch.equal(a, b) for a, b in zip(want, got))
        assert reserved.get_seq_length() == plain.get_seq_length()
    assert reserved.keys.untyped_storage().nbytes() >= reserved.keys.numel() * 4


def test_the_room_is_written_in_place() -> None:
    layer = ReservedLayer(reserve=8)
    layer.update(*states(2, 5, 0))
    storage = layer.keys.untyped_storage().data_ptr()
    for step in range(8):
        layer.update(*states(2, 1, step + 1))
        assert layer.keys.untyped_storage().data_ptr() == storage
    layer.update(*states(2, 1, 99))  # past the room: new buffers, the same values
    assert layer.keys.untyped_storage().data_ptr() != storage and layer.get_seq_length() == 14


def test_rows_dropped_and_reordered_as_the_dynamic_layer_does() -> None:
    plain, reserved = DynamicLayer(), ReservedLayer(reserve=4)
    for layer in (plain, reserved):
        layer.update(*states(4, 6, 0))
    index = torch.tensor([3, 1])
    plain.reorder_cache(index)
    reserved.reorder_cache(index)
    more = states(2, 1, 1)
    assert all(torch.equal(a, b) for a, b in zip(plain.update(*more), reserved.update(*more)))
    plain.batch_select_indices(torch.tensor([1]))
    reserved.batch_select_indices(torch.tensor([1]))
    assert torch.equal(plain.keys, reserved.keys) and torch.equal(plain.values, reserved.values)


def test_keys_set_from_outside_are_taken_up_at_the_next_update() -> None:
    plain, reserved = DynamicLayer(), ReservedLayer(reserve=4)
    for layer in (plain, reserved):
        layer.update(*states(2, 6, 0))
        layer.crop(-2)  # transformers' own crop sets the keys to a slice
    more = states(2, 3, 1)
    assert all(torch.equal(a, b) for a, b in zip(plain.update(*more), reserved.update(*more)))
    assert reserved.get_seq_length() == 7


def test_a_reserved_cache_replaces_only_the_plain_dynamic_layers() -> None:
    from transformers import MistralConfig

    config = MistralConfig(
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_hidden_layers=2,
        sliding_window=None,
    )
    assert all(type(layer) is ReservedLayer for layer in reserved_cache(config, 4).layers)
    config.sliding_window = 8
    assert not any(isinstance(layer, ReservedLayer) for layer in reserved_cache(config, 4).layers)


def test_rows_picked_by_a_mask_a_list_or_a_slice_as_the_dynamic_layer_picks_them() -> None:
    for pick in (torch.tensor([True, False, True]), [2, 0], slice(1, 3)):
        plain, reserved = DynamicLayer(), ReservedLayer(reserve=4)
        for layer in (plain, reserved):
            layer.update(*states(3, 5, 0))
            layer.batch_select_indices(pick)
        more = states(2, 1, 1)
        assert all(torch.equal(a, b) for a, b in zip(plain.update(*more), reserved.update(*more)))


def test_a_wider_dtype_widens_the_buffers_as_concatenating_does() -> None:
    plain, reserved = DynamicLayer(), ReservedLayer(reserve=4)
    for layer in (plain, reserved):
        layer.update(*(t.double() for t in states(2, 3, 0)))
        layer.update(*states(2, 1, 1))
    assert reserved.keys.dtype == plain.keys.dtype == torch.float64
    assert torch.equal(reserved.keys, plain.keys)


def test_reset_and_offload_let_go_of_the_buffers() -> None:
    layer = ReservedLayer(reserve=4)
    layer.update(*states(2, 3, 0))
    layer.reset()
    assert layer._buffers is None and layer.get_seq_length() == 0
    layer.update(*states(2, 3, 0))
    layer.offload()
    assert layer._buffers is None
    more = states(2, 2, 1)
    keys, _ = layer.update(*more)
    assert keys.shape[2] == 5 and torch.equal(keys[:, :, 3:], more[0])

"""A dynamic cache layer that reserves room for the tokens still to come, so that a decoding step writes
its keys and values in place instead of copying the whole cache.

Transformers' :class:`~transformers.cache_utils.DynamicLayer` grows by concatenation: every step of every
layer allocates the whole cache again and copies it. On the benchmark's long attack prompts that copy is
most of a decoding step on the CPU (24 rows of 660 tokens: 0.22 of 0.40 s, measured). A
:class:`ReservedLayer` keeps its keys and values in buffers with room for ``reserve`` more tokens and
hands out views of the filled part: the same values, read by the same attention, so the outputs are
those of the plain layer (tested token for token). Whatever else sets the layer's keys (cropping,
offloading, a beam reorder that is not ours) is taken up again, into a new buffer, at the next update.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class ReservedLayer(DynamicLayer):
    """A :class:`DynamicLayer` whose keys and values are views of buffers with room for ``reserve`` more
    tokens than it holds (grown, with ``reserve`` more room, when a write does not fit)."""

    def __init__(self, reserve: int) -> None:
        super().__init__()
        self.reserve = max(1, reserve)
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        self._views: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        held = self.get_seq_length()
        end = held + key_states.shape[-2]
        if not self._fits(key_states, end):
            self._adopt(key_states, value_states, held, end + self.reserve)
        assert self._buffers is not None
        keys, values = self._buffers
        keys[:, :, held:end] = key_states
        values[:, :, held:end] = value_states
        return self._show(end)

    def hold(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        """Takes ``keys`` and ``values`` (batch, heads, room, head size) as the buffers, their first
        ``length`` tokens held."""
        if not self.is_initialized:
            self.lazy_initialization(keys, values)
        self._buffers = (keys, values)
        self._show(length)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Keeps only (and reorders) the rows ``beam_idx``, with the same room."""
        if self._ours() and self.get_seq_length() > 0:
            self._select(beam_idx.to(cast(torch.Tensor, self.keys).device))
        else:
            super().reorder_cache(beam_idx)

    def batch_select_indices(self, indices: Any) -> None:
        """Keeps only the rows ``indices`` (anything that indexes the batch dimension), with the same room."""
        if self._ours() and self.get_seq_length() > 0:
            self._select(indices)
        else:
            super().batch_select_indices(indices)

    def reset(self) -> None:
        self._buffers = self._views = None
        super().reset()

    def offload(self) -> None:
        self._buffers = self._views = None  # the keys leave the buffers: taken up again at the next update
        super().offload()

    def _select(self, rows: Any) -> None:
        """New buffers of the same room holding the rows ``rows`` (row numbers: one copy, the room's few
        tokens included; a mask or a slice: the filled part picked, then copied into the room)."""
        assert self._buffers is not None
        held = self.get_seq_length()
        if isinstance(rows, torch.Tensor) and not rows.dtype.is_floating_point and rows.dtype != torch.bool:
            index = rows.to(self._buffers[0].device)
            self._buffers = (self._buffers[0].index_select(0, index), self._buffers[1].index_select(0, index))
            self._show(held)
            return
        buffers = []
        for buffer in self._buffers:
            kept = buffer[:, :, :held][rows]
            room = kept.new_empty((kept.shape[0], kept.shape[1], buffer.shape[2], kept.shape[3]))
            room[:, :, :held] = kept
            buffers.append(room)
        self._buffers = (buffers[0], buffers[1])
        self._show(held)

    def _ours(self) -> bool:
        """Whether the layer's keys and values are still the views this layer handed out."""
        return self._views is not None and self.keys is self._views[0] and self.values is self._views[1]

    def _fits(self, key_states: torch.Tensor, end: int) -> bool:
        if not self._ours():
            return False
        assert self._buffers is not None
        keys = self._buffers[0]
        return (
            keys.shape[-2] >= end
            and keys.shape[:2] == key_states.shape[:2]
            and keys.shape[-1] == key_states.shape[-1]
            and keys.dtype == torch.promote_types(keys.dtype, key_states.dtype)
            and keys.device == key_states.device
        )

    def _adopt(self, key_states: torch.Tensor, value_states: torch.Tensor, held: int, room: int) -> None:
        """New buffers with room for ``room`` tokens, holding the layer's ``held`` tokens so far."""
        buffers = []
        for old, new in ((cast(torch.Tensor, self.keys), key_states), (cast(torch.Tensor, self.values), value_states)):
            shape = (*new.shape[:2], room, new.shape[-1])
            dtype = torch.promote_types(old.dtype, new.dtype) if held else new.dtype  # as concatenating does
            buffer = new.new_empty(shape, dtype=dtype)
            if held:
                buffer[:, :, :held] = old
            buffers.append(buffer)
        self._buffers = (buffers[0], buffers[1])

    def _show(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sets the keys and values to the buffers' first ``length`` tokens; returns them."""
        assert self._buffers is not None
        views = (self._buffers[0][:, :, :length], self._buffers[1][:, :, :length])
        self.keys, self.values = views
        self._views = views
        return views


def reserved_cache(config: Any, reserve: int) -> DynamicCache:
    """An empty dynamic cache for a model of ``config``, its plain dynamic layers replaced by
    :class:`ReservedLayer` with room for ``reserve`` more tokens than the first write (other layers, such
    as sliding-window ones, are kept as they are)."""
    cache = DynamicCache(config=config)
    cache.layers = [ReservedLayer(reserve) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache

"""Prefixes kept from one generation call to the next: the run's prefix tree, not only a call's.

A call computes the prefixes its prompts share (:mod:`pytest_safeedit.backends.prefix`); a run makes many
calls (a batch of probes each, an edit's answers, a user's own tests), and the benchmark's attack
templates come back in call after call. The :class:`PrefixStore` keeps the keys and values of the prefixes
computed (one row, per layer), within a memory budget, the least recently used dropped first; a later
prompt that starts with the tokens of a kept prefix, or with some of them, starts from a slice of it.

Keys and values are only valid for the weights they were computed with, so each is kept for the state of
the model it was computed in (:func:`weights_state`: every parameter's and buffer's storage and version of
its values), and a call reads only those of the model's present state. The state changes with an edit's
optimizer step, a copy into a weight, a move to another device or dtype; a weight copied back to its saved
values (an editor's restore: :func:`mark_restored`) counts as unchanged, so that the unedited model's
prefixes serve again after an edit. While a module has a forward hook or a forward of its own (the rows
of several edited models, an edit's replayed blocks), nothing is stored or read: its outputs are not the
weights' alone. Changing values
without a new version (writing through ``tensor.data``) is not seen; an editor must write its weights
with ordinary in-place operations (``copy_`` under ``no_grad``), as every editor here does.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from itertools import chain, count
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    States = list[tuple[torch.Tensor, torch.Tensor]]

#: The attribute of a tensor that maps versions of its values to the earlier versions they equal.
_SAME_AS = "_safeedit_same_as"


def mark_restored(tensor: torch.Tensor, version: int) -> None:
    """Say that ``tensor``'s values, as they are now, are exactly those it had at ``version`` (its
    ``_version`` then): an editor's restore, so that keys and values computed before the edit stay valid."""
    same = tensor.__dict__.setdefault(_SAME_AS, {})
    same[tensor._version] = _first_version(tensor, version)


def _first_version(tensor: torch.Tensor, version: int) -> int:
    """The earliest version of ``tensor`` whose values equal those of ``version``."""
    same: dict[int, int] = tensor.__dict__.get(_SAME_AS, {})
    return same.get(version, version)


def weights_state(model: Any) -> tuple[Any, ...] | None:
    """What a forward pass of ``model`` depends on besides its inputs: each parameter's and buffer's
    storage and (earliest equal) version. None while a module has a forward hook or a forward of its own,
    other than accelerate's device hooks (their outputs are not the weights' alone)."""
    import torch

    module_hooks: Any = torch.nn.modules.module
    if module_hooks._global_forward_hooks or module_hooks._global_forward_pre_hooks:
        return None
    for module in model.modules():
        own_forward = "forward" in module.__dict__ and not hasattr(module, "_hf_hook")
        if module._forward_hooks or module._forward_pre_hooks or own_forward:
            return None
    tensors = chain(model.named_parameters(), model.named_buffers())
    return tuple((name, t.device, t.dtype, t.data_ptr(), _first_version(t, t._version)) for name, t in tensors)


def _common_length(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """The length of the longest common prefix of ``a`` and ``b`` (a binary search over slices)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _states_bytes(states: States) -> int:
    return sum(t.numel() * t.element_size() for pair in states for t in pair)


class PrefixStore:
    """The keys and values of prefixes computed, each for the state of the model it was computed in, the
    least recently used dropped first while more than a budget is kept."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[int, tuple[int, ...]], States] = OrderedDict()
        self._states: dict[tuple[Any, ...], int] = {}
        self._current: int | None = None
        self._numbers = count()
        self.bytes = 0
        #: Prefix tokens taken from the store instead of being computed (for the tests and the curious).
        self.tokens_reused = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._states.clear()
        self._current = None
        self.bytes = 0

    def open(self, model: Any) -> bool:
        """Whether the store serves ``model``'s forward passes now: false while they are not its weights'
        alone (:func:`weights_state`). Until the next call, only prefixes kept in the model's present state
        are read, and new ones are kept for that state: an edited model's never serve the unedited model,
        and the unedited model's serve again once an edit is restored (if they were not dropped since)."""
        state = weights_state(model)
        if state is None:
            self._current = None
            return False
        if state not in self._states:
            self._states[state] = next(self._numbers)
        self._current = self._states[state]
        return True

    def _own(self) -> list[tuple[int, ...]]:
        return [key for state, key in self._entries if state == self._current]

    def longest(self, tokens: Sequence[int]) -> tuple[int, tuple[int, ...] | None]:
        """How many of the first ``tokens`` a kept prefix holds (the most), and that prefix (None: none)."""
        row = tuple(tokens)
        best, best_key = 0, None
        for key in self._own():
            length = _common_length(key, row)
            if length > best:
                best, best_key = length, key
        return best, best_key

    def states(self, key: tuple[int, ...], length: int) -> States:
        """The keys and values of the first ``length`` tokens of kept prefix ``key`` (views of its
        tensors: never written in place), now the most recently used."""
        entry = (self._require(), key)
        self._entries.move_to_end(entry)
        self.tokens_reused += length
        return [(k[:, :, :length], v[:, :, :length]) for k, v in self._entries[entry]]

    def put(self, tokens: Sequence[int], states: States, budget: int) -> None:
        """Keep ``states``, the keys and values of ``tokens``, unless a kept prefix already holds them;
        kept prefixes that ``tokens`` start with are dropped (a slice of these serves them), then the
        least recently used while more than ``budget`` bytes are kept."""
        current, key = self._require(), tuple(tokens)
        own = self._own()
        if any(other[: len(key)] == key for other in own):
            return
        for other in own:
            if key[: len(other)] == other:
                self.bytes -= _states_bytes(self._entries.pop((current, other)))
        self._entries[(current, key)] = states
        self.bytes += _states_bytes(states)
        while self.bytes > budget and self._entries:
            _, dropped = self._entries.popitem(last=False)
            self.bytes -= _states_bytes(dropped)
        live = {state for state, _ in self._entries} | {current}
        self._states = {state: number for state, number in self._states.items() if number in live}

    def _require(self) -> int:
        if self._current is None:
            raise RuntimeError("the prefix store is not open for a model state")
        return self._current

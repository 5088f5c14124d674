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
weights' alone (transformers' hidden-state capture hooks excepted: they never change an output). A write
that gives no new version (a fused optimizer step, a write through ``tensor.data``) is seen in a sample
of each tensor's values (:data:`SAMPLED_VALUES`, evenly spaced), so only where it changes one of those;
an editor should write its weights with ordinary in-place operations (``copy_`` under ``no_grad``), as
every editor here does. What changes outputs without changing a tensor (an adapter switched off by a
flag) is not seen: call ``prefix_store.clear()`` on the model, or turn the store off with a budget of 0.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from itertools import chain, count
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    States = list[tuple[torch.Tensor, torch.Tensor]]

#: The attribute of a tensor that maps versions of its values to the earlier versions they equal.
_SAME_AS = "_safeedit_same_as"
#: The attribute of a tensor that numbers it: a new tensor may take a freed one's memory (and version 0).
_SERIAL = "_safeedit_serial"
_serials = count()
#: Values read from each tensor, evenly spaced, for the state: they change with a write that gives no new
#: version (a fused optimizer step, a write through ``tensor.data``) wherever it changes most values.
SAMPLED_VALUES = 64
#: Modules whose forward hooks never change an output: transformers' hidden-state capture, installed on
#: every block the first time a forward pass asks for hidden states, inert unless a collector is active.
INERT_HOOK_MODULES = frozenset({"transformers.utils.output_capturing"})


def mark_restored(tensor: torch.Tensor, version: int) -> None:
    """Say that ``tensor``'s values, as they are now, are exactly those it had at ``version`` (its
    ``_version`` then): an editor's restore, so that keys and values computed before the edit stay valid."""
    same = tensor.__dict__.setdefault(_SAME_AS, {})
    same[tensor._version] = _first_version(tensor, version)


def _first_version(tensor: torch.Tensor, version: int) -> int:
    """The earliest version of ``tensor`` whose values equal those of ``version``."""
    same: dict[int, int] = tensor.__dict__.get(_SAME_AS, {})
    return same.get(version, version)


def tensor_number(tensor: torch.Tensor) -> int:
    """A number for ``tensor`` itself, given the first time it is asked for (kept on the tensor)."""
    own: dict[str, Any] = tensor.__dict__
    if _SERIAL not in own:
        own[_SERIAL] = next(_serials)
    return int(own[_SERIAL])


def _hooked(module: Any) -> bool:
    """Whether ``module`` has a forward hook that may change an output, or a forward of its own other than
    accelerate's device hook."""
    hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
    if any(getattr(hook, "__module__", None) not in INERT_HOOK_MODULES for hook in hooks):
        return True
    return "forward" in module.__dict__ and not hasattr(module, "_hf_hook")


def _sample_at(shape: tuple[int, ...], device: Any) -> tuple[Any, ...]:
    """The coordinates of :data:`SAMPLED_VALUES` evenly spaced elements of a tensor of ``shape``, first and
    last included (a gather reads just these, whatever the strides)."""
    import torch

    numel = math.prod(shape)
    flat = torch.linspace(0, numel - 1, min(numel, SAMPLED_VALUES), device=device).round().long()
    return tuple(torch.unravel_index(flat, shape))


def _sampled(tensors: Sequence[torch.Tensor]) -> bytes:
    """A digest of :data:`SAMPLED_VALUES` values of each tensor, evenly spaced (meta tensors have none)."""
    import torch

    picks: dict[Any, list[torch.Tensor]] = {}
    spots: dict[tuple[tuple[int, ...], Any], tuple[Any, ...]] = {}
    for t in tensors:
        if t.is_meta or t.numel() == 0:
            continue
        key = (tuple(t.shape), t.device)
        if key not in spots:
            spots[key] = _sample_at(key[0], t.device)
        values = t.detach()[spots[key]] if t.dim() else t.detach().reshape(1)
        picks.setdefault(t.device, []).append(values.contiguous().view(torch.uint8).reshape(-1))
    digest = hashlib.blake2b(digest_size=16)
    for device in sorted(picks, key=str):
        digest.update(torch.cat(picks[device]).cpu().numpy().tobytes())
    return digest.digest()


def weights_state(model: Any) -> tuple[Any, ...] | None:
    """What a forward pass of ``model`` depends on besides its inputs: each parameter's and buffer's
    identity, storage, dtype and (earliest equal) version, and a sample of their values. None while a
    module has a forward hook that may change an output or a forward of its own, other than accelerate's
    device hooks (the outputs are not the weights' alone)."""
    import torch

    module_hooks: Any = torch.nn.modules.module
    if module_hooks._global_forward_hooks or module_hooks._global_forward_pre_hooks:
        return None
    if any(_hooked(module) for module in model.modules()):
        return None
    tensors = list(chain(model.named_parameters(), model.named_buffers()))
    if any(t.layout != torch.strided or t.is_nested or t.is_quantized for _, t in tensors):
        return None  # sparse, nested or quantized tensors: no storage address and values to read plainly
    with torch.no_grad():
        # An inference tensor (made under ``torch.inference_mode``) keeps no version: its values tell.
        parts = tuple(
            (
                name,
                tensor_number(t),
                t.device,
                t.dtype,
                t.data_ptr(),
                -1 if t.is_inference() else _first_version(t, t._version),
            )
            for name, t in tensors
        )
        return (parts, _sampled([t for _, t in tensors]))


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
        #: The states that last (the first one met, and any met again after another): over budget, the
        #: prefixes of other states (an edited model's, whose state does not come back) go first.
        self._lasting: set[int] = set()
        self._last: int | None = None
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
        self._lasting.clear()
        self._current = self._last = None
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
        number = self._states.get(state)
        if number is None:
            number = self._states[state] = next(self._numbers)
            if not self._lasting:
                self._lasting.add(number)  # the first state met: the model as loaded
        elif number != self._last:
            self._lasting.add(number)  # met again after another: the unedited model after an edit
        self._current = self._last = number
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
        kept prefixes that ``tokens`` start with are dropped (a slice of these serves them), then, while
        more than ``budget`` bytes are kept, first those of the states that do not last (another state than
        this call's, neither the first met nor met again after another: an edited model's, before the
        unedited model's templates), then the least recently used."""
        current, key = self._require(), tuple(tokens)
        own = self._own()
        if any(other[: len(key)] == key for other in own):
            return
        for other in own:
            if key[: len(other)] == other:
                self._drop((current, other))
        self._entries[(current, key)] = states
        self.bytes += _states_bytes(states)
        dead = [e for e in self._entries if e[0] != current and e[0] not in self._lasting]
        for entry in dict.fromkeys([*dead, *self._entries]):
            if self.bytes <= budget:
                break
            if entry in self._entries:
                self._drop(entry)
        live = {state for state, _ in self._entries} | {current} | self._lasting
        self._states = {state: number for state, number in self._states.items() if number in live}

    def _drop(self, entry: tuple[int, tuple[int, ...]]) -> None:
        self.bytes -= _states_bytes(self._entries.pop(entry))

    def _require(self) -> int:
        if self._current is None:
            raise RuntimeError("the prefix store is not open for a model state")
        return self._current

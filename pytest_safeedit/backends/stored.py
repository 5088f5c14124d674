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

The model's first state (as loaded) also keeps, with each prefix, the hidden states each block hands on.
A model that differs from it only from some block up (one edit of DINM or FT-L, in place or as the rows of
several edits) computes the same keys and values below that block, so it reads those and the hidden
state entering the block (:meth:`PrefixStore.beneath`) and computes only the blocks from it up.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain, count
from typing import TYPE_CHECKING, Any, cast

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
#: The module of the hooks that give the rows of several edits their own weights: a call that answers such
#: rows knows which modules they change (:func:`weights_state` with ``row_hooks``).
ROW_HOOK_MODULE = "pytest_safeedit.backends.rows"


@dataclass(frozen=True)
class WeightsState:
    """What a forward pass depends on besides its inputs, per parameter and buffer: name, identity
    (a serial number), device, dtype, storage address, earliest equal version and a sample of values."""

    tensors: tuple[tuple[Any, ...], ...]

    def differing(self, other: WeightsState) -> list[str] | None:
        """The names of the tensors that differ between the two states (None: not the same tensors)."""
        if len(self.tensors) != len(other.tensors):
            return None
        out = []
        for mine, theirs in zip(self.tensors, other.tensors):
            if mine[0] != theirs[0]:
                return None
            if mine != theirs:
                out.append(mine[0])
        return out


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


def _hooked(module: Any, inert: frozenset[str]) -> bool:
    """Whether ``module`` has a forward hook that may change an output (one not defined in a module of
    ``inert``), or a forward of its own other than accelerate's device hook."""
    hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
    if any(getattr(hook, "__module__", None) not in inert for hook in hooks):
        return True
    return "forward" in module.__dict__ and not hasattr(module, "_hf_hook")


def _sample_at(shape: tuple[int, ...], device: Any) -> tuple[Any, ...]:
    """The coordinates of :data:`SAMPLED_VALUES` evenly spaced elements of a tensor of ``shape``, first and
    last included (a gather reads just these, whatever the strides)."""
    import torch

    numel = math.prod(shape)
    flat = torch.linspace(0, numel - 1, min(numel, SAMPLED_VALUES), device=device).round().long()
    return tuple(torch.unravel_index(flat, shape))


def _sampled(tensors: Sequence[torch.Tensor]) -> list[bytes]:
    """A digest of :data:`SAMPLED_VALUES` values of each tensor, evenly spaced (meta tensors have none)."""
    import torch

    picks: dict[Any, list[tuple[int, torch.Tensor]]] = {}
    spots: dict[tuple[tuple[int, ...], Any], tuple[Any, ...]] = {}
    for at, t in enumerate(tensors):
        if t.is_meta or t.numel() == 0:
            continue
        key = (tuple(t.shape), t.device)
        if key not in spots:
            spots[key] = _sample_at(key[0], t.device)
        values = t.detach()[spots[key]] if t.dim() else t.detach().reshape(1)
        picks.setdefault(t.device, []).append((at, values.contiguous().view(torch.uint8).reshape(-1)))
    out = [b""] * len(tensors)
    for device in sorted(picks, key=str):
        read = torch.cat([values for _, values in picks[device]]).cpu().numpy().tobytes()
        offset = 0
        for at, values in picks[device]:
            chunk = read[offset : offset + values.numel()]
            offset += values.numel()
            out[at] = hashlib.blake2b(chunk, digest_size=8).digest()
    return out


def weights_state(model: Any, *, row_hooks: bool = False) -> WeightsState | None:
    """What a forward pass of ``model`` depends on besides its inputs: each parameter's and buffer's
    identity, storage, dtype and (earliest equal) version, and a sample of their values. None while a
    module has a forward hook that may change an output or a forward of its own, other than accelerate's
    device hooks (the outputs are not the weights' alone); ``row_hooks``: the hooks that give rows their
    own edited weights (:mod:`pytest_safeedit.backends.rows`) do not count (the caller knows what they
    change)."""
    import torch

    module_hooks: Any = torch.nn.modules.module
    if module_hooks._global_forward_hooks or module_hooks._global_forward_pre_hooks:
        return None
    inert = INERT_HOOK_MODULES | {ROW_HOOK_MODULE} if row_hooks else INERT_HOOK_MODULES
    if any(_hooked(module, inert) for module in model.modules()):
        return None
    tensors = list(chain(model.named_parameters(), model.named_buffers()))
    if any(t.layout != torch.strided or t.is_nested or t.is_quantized for _, t in tensors):
        return None  # sparse, nested or quantized tensors: no storage address and values to read plainly
    with torch.no_grad():
        # An inference tensor (made under ``torch.inference_mode``) keeps no version: its values tell.
        sampled = _sampled([t for _, t in tensors])
        return WeightsState(
            tuple(
                (
                    name,
                    tensor_number(t),
                    t.device,
                    t.dtype,
                    t.data_ptr(),
                    -1 if t.is_inference() else _first_version(t, t._version),
                    sample,
                )
                for (name, t), sample in zip(tensors, sampled)
            )
        )


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


@dataclass
class Kept:
    """A kept prefix's keys and values (one row, per layer) and, where kept, the hidden states each block
    but the last hands on (one row each, ``[1, tokens, width]``)."""

    states: States
    hidden: list[torch.Tensor] | None = None

    @property
    def bytes(self) -> int:
        return _bytes([t for pair in self.states for t in pair]) + _bytes(self.hidden or [])


@dataclass(frozen=True)
class Beneath:
    """The first ``length`` tokens of a kept prefix of a model that equals the present one below block
    ``level``: those layers' keys and values, and the hidden state entering block ``level`` (None where
    ``level`` is past the last block: every layer is kept)."""

    length: int
    level: int
    states: States
    entering: torch.Tensor | None


class PrefixStore:
    """The keys and values of prefixes computed, each for the state of the model it was computed in, the
    least recently used dropped first while more than a budget is kept."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[int, tuple[int, ...]], Kept] = OrderedDict()
        #: The states that last (the first one met, and any met again after another): over budget, the
        #: prefixes of other states (an edited model's, whose state does not come back) go first.
        self._lasting: set[int] = set()
        self._last: int | None = None
        self._states: dict[WeightsState, int] = {}
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

    @property
    def keeps_hidden(self) -> bool:
        """Whether prefixes kept now keep their hidden states too: in the first state met (the model as
        loaded), which other states read below their lowest changed block (:meth:`beneath`)."""
        return self._current is not None and self._current == min(self._lasting, default=None)

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
        return self.kept(key, length).states

    def kept(self, key: tuple[int, ...], length: int) -> Kept:
        """:meth:`states`, with the hidden states of those tokens where they were kept."""
        entry = (self._require(), key)
        self._entries.move_to_end(entry)
        self.tokens_reused += length
        kept = self._entries[entry]
        hidden = None if kept.hidden is None else [h[:, :length] for h in kept.hidden]
        return Kept(sliced_states(kept.states, length), hidden)

    def levels(self, state: WeightsState, level_of: Callable[[list[str]], int]) -> dict[int, int]:
        """For each kept state, the block below which the model in ``state`` equals it: ``level_of`` gives it
        from the names of the tensors that differ (0: equal below none; the number of blocks: equal
        everywhere)."""
        levels: dict[int, int] = {}
        for kept_state, number in self._states.items():
            names = state.differing(kept_state)
            if names is not None:
                levels[number] = level_of(names)
        return levels

    def beneath(self, tokens: Sequence[int], levels: dict[int, int]) -> Beneath | None:
        """The most of the first ``tokens`` that a kept prefix with hidden states holds, of a state that the
        model equals below block ``levels[state]`` (:meth:`levels`, at least 1), with that block's keys and
        values below and the hidden state entering it; None where none holds any. The entry is then the
        most recently used."""
        row = tuple(tokens)
        best, best_entry = 0, None
        for entry, kept in self._entries.items():
            if kept.hidden is None or levels.get(entry[0], 0) < 1:
                continue
            length = _common_length(entry[1], row)
            if length > best:
                best, best_entry = length, entry
        if best_entry is None:
            return None
        self._entries.move_to_end(best_entry)
        kept, level = self._entries[best_entry], levels[best_entry[0]]
        level = min(level, len(kept.states))
        hidden = cast(list[Any], kept.hidden)
        entering = hidden[level - 1][:, :best] if level <= len(hidden) else None
        return Beneath(best, level, sliced_states(kept.states[:level], best), entering)

    def put(self, tokens: Sequence[int], states: States, budget: int, hidden: list[torch.Tensor] | None = None) -> None:
        """Keep ``states``, the keys and values of ``tokens``, unless a kept prefix already holds them;
        kept prefixes that ``tokens`` start with are dropped (a slice of these serves them), then, while
        more than ``budget`` bytes are kept, first those of the states that do not last (another state than
        this call's, neither the first met nor met again after another: an edited model's, before the
        unedited model's templates), then the hidden states of the least recently used, then the least
        recently used. Keys and values that alone exceed ``budget`` are not kept. Views of other tensors
        are copied, so that what is kept is what is counted."""
        current, key = self._require(), tuple(tokens)
        own = self._own()
        if any(other[: len(key)] == key for other in own) or Kept(states).bytes > budget:
            return
        for other in own:
            if key[: len(other)] == other:
                self._drop((current, other))
        kept = Kept([(_owned(k), _owned(v)) for k, v in states])
        if hidden is not None and self.keeps_hidden:
            kept.hidden = [_owned(h) for h in hidden]
        self._entries[(current, key)] = kept
        self.bytes += kept.bytes
        dead = [e for e in self._entries if e[0] != current and e[0] not in self._lasting]
        for entry in dict.fromkeys(dead):
            if self.bytes <= budget:
                break
            self._drop(entry)
        for entry in list(self._entries):
            if self.bytes <= budget:
                break
            some = self._entries[entry]
            if some.hidden is not None:
                self.bytes -= _bytes(some.hidden)
                some.hidden = None
        for entry in list(self._entries):
            if self.bytes <= budget:
                break
            self._drop(entry)
        live = {state for state, _ in self._entries} | {current} | self._lasting
        self._states = {state: number for state, number in self._states.items() if number in live}

    def _drop(self, entry: tuple[int, tuple[int, ...]]) -> None:
        self.bytes -= self._entries.pop(entry).bytes

    def _require(self) -> int:
        if self._current is None:
            raise RuntimeError("the prefix store is not open for a model state")
        return self._current


def _bytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _owned(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``, or a copy where it is a view of another's memory (a slice of a kept prefix)."""
    return tensor if tensor._base is None else tensor.clone()


def sliced_states(states: States, length: int) -> States:
    """The keys and values of the first ``length`` tokens (views)."""
    return [(k[:, :, :length], v[:, :, :length]) for k, v in states]

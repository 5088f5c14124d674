"""Answering several cases' edits in one batch: each row of a batch runs with its own case's edited weight.

An editor that changes one weight matrix per case (DINM, FT-L) leaves the rest of the model as it was, so
the edited models of several cases differ in one module each. After the edits (each made on the original
weights and restored), their probes are generated together: a forward hook on each edited module computes
the rows of each case with that case's copy of the edited weight, so every row sees exactly its own edited
model while the batch is as large as unedited generation's.

Generation drops rows that have finished from its batch (:meth:`pytest_safeedit.backends.hf.LoadedModel.generate`);
it says which rows remain with :func:`batch_rows`, so that the hooks keep giving each row its own weight.
A module that sees the batch flattened to ``[batch * tokens, width]`` (mixture-of-experts blocks) has each
row's tokens mapped back to it; one whose input rows cannot be told apart by row (an expert given only the
tokens routed to it) raises :class:`RowLayoutError`, and the edits are answered one at a time.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

if TYPE_CHECKING:
    import torch


class RowLayoutError(Exception):
    """An edited module's input rows are neither the batch's rows nor its tokens, so that they cannot be
    given each row's own weight; the edits must be answered one at a time."""


#: model -> which of the rows given to :func:`row_weights` the rows of its forward passes are, in order.
_ROWS: WeakKeyDictionary[Any, list[int]] = WeakKeyDictionary()
#: model -> for each row given to the active :func:`row_weights`, which weights it runs with.
_WEIGHTS: WeakKeyDictionary[Any, list[Hashable]] = WeakKeyDictionary()


def row_weight_keys(model: Any, count: int) -> list[Hashable] | None:
    """While :func:`row_weights` is active on ``model``, for each of rows ``0..count-1`` a key that two rows
    share when they run with the same weights (rows beyond those given run with the model's own); None
    when it is not active (every row runs with the model's own weights)."""
    keys = _WEIGHTS.get(model)
    if keys is None:
        return None
    return [keys[row] if row < len(keys) else None for row in range(count)]


@contextmanager
def batch_rows(model: Any, rows: Sequence[int]) -> Iterator[None]:
    """While active, the rows of ``model``'s forward passes are rows ``rows`` (in that order) of the batch
    that :func:`row_weights` numbers; without it, row ``i`` is row ``i``."""
    before = _ROWS.get(model)
    _ROWS[model] = list(rows)
    try:
        yield
    finally:
        if before is None:
            del _ROWS[model]
        else:
            _ROWS[model] = before


def projected(module: Any, inputs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``module``'s output on ``inputs`` with ``weight`` in place of its own (nn.Linear, or GPT-2's Conv1D,
    whose weight is stored transposed)."""
    import torch

    if isinstance(module, torch.nn.Linear):
        return torch.nn.functional.linear(inputs, weight, module.bias)
    flat = inputs.reshape(-1, inputs.shape[-1])
    out = torch.addmm(module.bias, flat, weight) if module.bias is not None else flat @ weight
    return out.reshape(*inputs.shape[:-1], weight.shape[-1])


@contextmanager
def row_weights(model: Any, rows: Sequence[tuple[str, torch.Tensor] | None]) -> Iterator[None]:
    """While active, row ``i`` of every forward pass of ``model`` uses ``rows[i]`` = (module name, weight)
    for that module's weight; a None row, and every other module, use the model's own weights.

    A forward pass raises :class:`RowLayoutError` where an edited module's input has neither one row per
    sequence nor one per token of the batch."""

    by_module: dict[str, dict[int, list[int]]] = {}
    weights: dict[int, torch.Tensor] = {}
    for index, row in enumerate(rows):
        if row is not None:
            name, weight = row
            weights.setdefault(id(weight), weight)
            by_module.setdefault(name, {}).setdefault(id(weight), []).append(index)
    modules = dict(model.named_modules())
    #: (sequences, tokens) of the forward pass under way, as the model's input says
    shape: list[tuple[int, int]] = []

    def note_shape(_: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        shape[:] = [(int(ids.shape[0]), int(ids.shape[1]))] if ids is not None and ids.dim() >= 2 else []

    handles = [model.register_forward_pre_hook(note_shape, with_kwargs=True)]
    for name, groups in by_module.items():
        handles.append(modules[name].register_forward_hook(_replace_rows(model, name, groups, weights, shape)))
    before = _WEIGHTS.get(model)
    _WEIGHTS[model] = [None if row is None else (row[0], id(row[1])) for row in rows]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        if before is None:
            del _WEIGHTS[model]
        else:
            _WEIGHTS[model] = before


def _replace_rows(
    model: Any,
    name: str,
    groups: Mapping[int, list[int]],
    weights: Mapping[int, torch.Tensor],
    shape: Sequence[tuple[int, int]],
) -> Any:
    import torch

    def hook(module: Any, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        inputs = args[0]
        present = _ROWS.get(model)
        sequences, tokens = shape[0] if shape else (len(present) if present is not None else inputs.shape[0], 1)
        if inputs.shape[0] == sequences:
            per_row = 1
        elif inputs.dim() == 2 and inputs.shape[0] == sequences * tokens:
            per_row = tokens  # flattened, one row per token (mixture-of-experts blocks)
        else:
            raise RowLayoutError(
                f"{name} gets {inputs.shape[0]} input rows in a batch of {sequences} sequences of {tokens} "
                "tokens, so its rows cannot be given each case's own edited weight (an expert that sees only "
                "the tokens routed to it?); the edits of this module are answered one at a time"
            )
        for key, indices in groups.items():
            if present is None:
                positions = [i for i in indices if i < sequences]
            else:
                wanted = set(indices)
                positions = [at for at, row in enumerate(present) if row in wanted]
            rows = [at * per_row + token for at in positions for token in range(per_row)]
            index = torch.tensor(rows, dtype=torch.long, device=inputs.device)
            if len(index):
                output[index] = projected(module, inputs[index], weights[key]).to(output.dtype)
        return output

    return hook

"""Answering several cases' edits in one batch: each row of a batch runs with its own case's edited weight.

An editor that changes one weight matrix per case (DINM, FT-L) leaves the rest of the model as it was, so
the edited models of several cases differ in one module each. After the edits (each made on the original
weights and restored), their probes are generated together: a forward hook on each edited module computes
the rows of each case with that case's copy of the edited weight, so every row sees exactly its own edited
model while the batch is as large as unedited generation's.

Generation drops rows that have finished from its batch (:meth:`pytest_safeedit.hf.LoadedModel.generate`);
it says which rows remain with :func:`batch_rows`, so that the hooks keep giving each row its own weight.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

if TYPE_CHECKING:
    import torch

#: model -> which of the rows given to :func:`row_weights` the rows of its forward passes are, in order.
_ROWS: WeakKeyDictionary[Any, list[int]] = WeakKeyDictionary()


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
    for that module's weight; a None row, and every other module, use the model's own weights."""

    by_module: dict[str, dict[int, list[int]]] = {}
    weights: dict[int, torch.Tensor] = {}
    for index, row in enumerate(rows):
        if row is not None:
            name, weight = row
            weights.setdefault(id(weight), weight)
            by_module.setdefault(name, {}).setdefault(id(weight), []).append(index)
    modules = dict(model.named_modules())
    handles = []
    for name, groups in by_module.items():
        handles.append(modules[name].register_forward_hook(_replace_rows(model, groups, weights)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _replace_rows(model: Any, groups: Mapping[int, list[int]], weights: Mapping[int, torch.Tensor]) -> Any:
    import torch

    def hook(module: Any, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        inputs = args[0]
        present = _ROWS.get(model)
        for key, indices in groups.items():
            if present is None:
                positions = [i for i in indices if i < inputs.shape[0]]
            else:
                wanted = set(indices)
                positions = [at for at, row in enumerate(present) if row in wanted]
            index = torch.tensor(positions, dtype=torch.long, device=inputs.device)
            if len(index):
                output[index] = projected(module, inputs[index], weights[key]).to(output.dtype)
        return output

    return hook

"""Answering several cases' edits in one batch: each row of a batch runs with its own case's edited weight.

An editor that changes one weight matrix per case (DINM, FT-L) leaves the rest of the model as it was, so
the edited models of several cases differ in one module each. After the edits (each made on the original
weights and restored), their probes are generated together: a forward hook on each edited module computes
the rows of each case with that case's copy of the edited weight, so every row sees exactly its own edited
model while the batch is as large as unedited generation's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


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
        handles.append(modules[name].register_forward_hook(_replace_rows(groups, weights)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _replace_rows(groups: Mapping[int, list[int]], weights: Mapping[int, torch.Tensor]) -> Any:
    import torch

    def hook(module: Any, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        inputs = args[0]
        for key, indices in groups.items():
            index = torch.tensor([i for i in indices if i < inputs.shape[0]], dtype=torch.long, device=inputs.device)
            if len(index):
                output[index] = projected(module, inputs[index], weights[key]).to(output.dtype)
        return output

    return hook

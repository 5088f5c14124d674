"""Answering several cases' edits in one batch: each row of a batch runs with its own case's edited weight.

An editor that changes one weight matrix per case (DINM, FT-L) leaves the rest of the model as it was, so
the edited models of several cases differ in one module each. After the edits (each made on the original
weights and restored), their probes are generated together: a forward hook on each edited module computes
the rows of each case with that case's copy of the edited weight, so every row sees exactly its own edited
model while the batch is as large as unedited generation's.

Generation drops rows that have finished from its batch (:meth:`pytest_safeedit.backends.hf.LoadedModel.generate`);
it says which rows remain through the :class:`RowWeights` that :func:`row_weights` gives it (an argument of the
generation, not state kept on the side), so that the hooks keep giving each row its own weight.
A module that sees the batch flattened to ``[batch * tokens, width]`` (mixture-of-experts blocks) has each
row's tokens mapped back to it; one whose input rows cannot be told apart by row (an expert given only the
tokens routed to it) raises :class:`RowLayoutError`, and the edits are answered one at a time.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class RowLayoutError(Exception):
    """An edited module's input rows are neither the batch's rows nor its tokens, so that they cannot be
    given each row's own weight; the edits must be answered one at a time."""


class RowWeights:
    """Per-row weights while :func:`row_weights` is active on a model: which rows of the numbered batch
    the model's forward passes are (:meth:`present`), and which weights each row runs with
    (:meth:`weight_keys`). Handed to the generation that answers the rows, as an argument."""

    def __init__(self, rows: Sequence[tuple[str, torch.Tensor] | None]) -> None:
        self._keys: list[Hashable] = [None if row is None else (row[0], id(row[1])) for row in rows]
        #: The modules some row runs with another weight of (qualified names, in the order first met).
        self.modules: tuple[str, ...] = tuple(dict.fromkeys(row[0] for row in rows if row is not None))
        #: The numbers of the rows of the forward passes under way (None: row ``i`` is row ``i``).
        self.rows: list[int] | None = None

    def weight_keys(self, count: int) -> list[Hashable]:
        """For each of rows ``0..count-1`` a key that two rows share when they run with the same weights
        (rows beyond those given run with the model's own)."""
        return [self._keys[row] if row < len(self._keys) else None for row in range(count)]

    @contextmanager
    def present(self, rows: Sequence[int]) -> Iterator[None]:
        """While active, the rows of the model's forward passes are rows ``rows`` (in that order)."""
        before = self.rows
        self.rows = list(rows)
        try:
            yield
        finally:
            self.rows = before


def rows_present(weights: RowWeights | None, rows: Sequence[int]) -> AbstractContextManager[None]:
    """:meth:`RowWeights.present`, or nothing to do where no row weights are active."""
    return nullcontext() if weights is None else weights.present(rows)


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
def row_weights(model: Any, rows: Sequence[tuple[str, torch.Tensor] | None]) -> Iterator[RowWeights]:
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

    state = RowWeights(rows)
    handles = [model.register_forward_pre_hook(note_shape, with_kwargs=True)]
    for name, groups in by_module.items():
        handles.append(modules[name].register_forward_hook(_replace_rows(state, name, groups, weights, shape)))
    try:
        yield state
    finally:
        for handle in handles:
            handle.remove()


def _replace_rows(
    state: RowWeights,
    name: str,
    groups: Mapping[int, list[int]],
    weights: Mapping[int, torch.Tensor],
    shape: Sequence[tuple[int, int]],
) -> Any:
    import torch

    def hook(module: Any, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        inputs = args[0]
        present = state.rows
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

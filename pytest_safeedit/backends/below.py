"""The blocks below the lowest edited one, run once for the rows of every edited model.

An editor that changes one block's weight (DINM, FT-L) leaves the blocks below it as they were, so for the
same tokens their keys and values, and the hidden states the last of them hands on, are the unedited
model's whatever edit a row runs with. A prefix shared by rows of several edited models is therefore run
through the blocks below the lowest edited one once (:func:`run_below`), and through the blocks from it up
once per edited model, the blocks below handing on the states already computed (:func:`blocks_replayed`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any


class _Reached(Exception):
    """Raised by the hook on the last block below: carries its output and ends the forward pass there."""

    def __init__(self, output: Any) -> None:
        super().__init__("the last block below the edited one has run")
        self.output = output


def lowest_edited_block(prefix: str, count: int, modules: Iterable[str]) -> int | None:
    """The lowest of ``count`` blocks (named ``{prefix}.{i}``) that holds one of ``modules`` (qualified
    names); None where one of them is outside every block (an embedding, the output head) or none is given."""
    lowest = None
    for name in modules:
        block = next((i for i in range(count) if name.startswith(f"{prefix}.{i}.")), None)
        if block is None:
            return None
        lowest = block if lowest is None else min(lowest, block)
    return lowest


def run_below(blocks: Sequence[Any], below: int, forward: Callable[[], Any]) -> Any | None:
    """Call ``forward`` (a forward pass of the model that holds ``blocks``) and stop it once block
    ``below - 1`` has run: that block's output, as the next block would get it (None: the forward pass
    ended without calling it). The blocks above, the final norm and the output head do not run; a cache
    given to the forward pass holds the new keys and values of the blocks below only."""
    if below < 1:
        raise ValueError(f"there is no block below block {below}")

    def reached(_: Any, __: Any, output: Any) -> None:
        raise _Reached(output)

    handle = blocks[below - 1].register_forward_hook(reached)
    try:
        forward()
    except _Reached as stop:
        return stop.output
    finally:
        handle.remove()
    return None


@contextmanager
def blocks_replayed(blocks: Sequence[Any], below: int, output: Any) -> Iterator[None]:
    """While active, blocks ``0 .. below - 1`` compute nothing and hand on ``output`` (block ``below - 1``'s
    output on the same tokens, from :func:`run_below`), so that a forward pass runs only the blocks from
    ``below`` up; their cache layers are not updated. The blocks' own ``forward`` is put back on exit."""
    replayed = list(blocks)[:below]
    own = [block.__dict__.get("forward") for block in replayed]

    def handed_on(*_: Any, **__: Any) -> Any:
        return output

    for block in replayed:
        block.forward = handed_on
    try:
        yield
    finally:
        for block, forward in zip(replayed, own):
            if forward is None:
                del block.forward
            else:
                block.forward = forward

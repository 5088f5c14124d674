"""pytest-xdist workers: batch each probe with the ones queued on the same worker."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest

from pytest_safeedit.session import Request


def worker_lookahead(config: pytest.Config, items: Sequence[pytest.Item]) -> Callable[[], Iterator[Request]]:
    """Requests of the items queued on this worker, in order (none when the queue cannot be read).

    A worker collects every item but runs only those the controller sends it; batching with any other
    item would generate responses that this worker never uses.
    """
    from pytest_safeedit.collect import ProbeItem

    def upcoming() -> Iterator[Request]:
        interactors = [p for p in config.pluginmanager.get_plugins() if type(p).__name__ == "WorkerInteractor"]
        queue = getattr(interactors[0], "torun", None) if interactors else None
        if queue is None or not hasattr(queue, "lock"):
            return
        with queue.lock() as pending:
            indices = [i for i in pending if isinstance(i, int)]
        for index in indices:
            item = items[index] if 0 <= index < len(items) else None
            if isinstance(item, ProbeItem):
                yield from item.requests()

    return upcoming

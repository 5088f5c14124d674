"""pytest-xdist contact: worker positions, and a warning where the worker's queue cannot be read."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from pytest_safeedit.plugin.xdist_support import BatchingWarning, queued_items, worker_position


def config_with(plugins: list[Any], **attributes: Any) -> Any:
    return SimpleNamespace(pluginmanager=SimpleNamespace(get_plugins=lambda: plugins), **attributes)


def test_worker_position() -> None:
    assert worker_position(config_with([], workerinput={"workerid": "gw3", "workercount": 4})) == (3, 4)
    assert worker_position(config_with([])) == (None, None)


def test_unreadable_queue_warns_once_and_batches_nothing_ahead() -> None:
    upcoming = queued_items(config_with([]), [])
    with pytest.warns(BatchingWarning, match=r"install pytest-xdist>=3.7") as caught:
        assert list(upcoming()) == []
        assert list(upcoming()) == []
    assert len(caught) == 1


def test_queued_items_in_order() -> None:
    from contextlib import contextmanager

    class Queue:
        @contextmanager
        def lock(self) -> Any:
            yield [2, 0, "shutdown"]

    class WorkerInteractor:
        torun = Queue()

    items = ["a", "b", "c"]
    assert list(queued_items(config_with([WorkerInteractor()]), items)()) == ["c", "a"]  # type: ignore[arg-type]

"""Everything that touches pytest-xdist: who this process is, what workers send the controller, and the
worker's queue that probes are batched from.

Public xdist API is used where it exists (``config.workerinput``, ``config.workeroutput``, the
``pytest_testnodedown`` hook, the ``dsession`` plugin of the controller). A worker's queue of upcoming
items has no public API: it is read from the ``WorkerInteractor`` plugin (its ``torun`` queue with
``lock()``, present since pytest-xdist 3.7, the minimum the ``xdist`` extra asks for). Where it cannot
be read, the run warns once and each probe is generated with the others of its own case only.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

MIN_XDIST = "3.7"


class BatchingWarning(pytest.PytestWarning):
    """Batching ahead is unavailable under this pytest-xdist; results are the same, generation slower."""


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def is_controller(config: pytest.Config) -> bool:
    """Whether this process hands tests to xdist workers (and runs none itself)."""
    return config.pluginmanager.has_plugin("dsession")


def worker_position(config: pytest.Config) -> tuple[int | None, int | None]:
    """(worker number, worker count) of an xdist worker (``gw3`` of 4 -> (3, 4)); (None, None) otherwise."""
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    worker = str(workerinput.get("workerid", ""))
    if not (worker.startswith("gw") and worker[2:].isdigit()):
        return None, None
    return int(worker[2:]), int(workerinput.get("workercount", 1))


def send_to_controller(config: pytest.Config, key: str, data: Any) -> None:
    """On a worker, hand plain data to the controller (read there by :func:`received`)."""
    output: dict[str, Any] = config.workeroutput  # type: ignore[attr-defined]
    output[key] = data


def received(node: Any, key: str) -> Any:
    """On the controller, in ``pytest_testnodedown``: what a worker sent under ``key`` (None if nothing)."""
    output = getattr(node, "workeroutput", None) or {}
    return output.get(key)


def _worker_queue(config: pytest.Config) -> Any:
    for plugin in config.pluginmanager.get_plugins():
        if type(plugin).__name__ == "WorkerInteractor":
            queue = getattr(plugin, "torun", None)
            if queue is not None and hasattr(queue, "lock"):
                return queue
    return None


def queued_items(config: pytest.Config, items: Sequence[pytest.Item]) -> Callable[[], Iterator[pytest.Item]]:
    """The items queued on this worker, in order, read anew at each call.

    A worker collects every item but runs only those the controller sends it; batching with any other
    item would generate responses that this worker never uses. Warns once where the queue is unreadable.
    """
    warned = False

    def upcoming() -> Iterator[pytest.Item]:
        nonlocal warned
        queue = _worker_queue(config)
        if queue is None:
            if not warned:
                warned = True
                warnings.warn(
                    BatchingWarning(
                        "pytest-safeedit cannot read this pytest-xdist worker's queue, so probes are not batched "
                        f"across cases on workers; install pytest-xdist>={MIN_XDIST} (pip install "
                        "'pytest-safeedit[xdist]') for batched generation under -n"
                    ),
                    stacklevel=2,
                )
            return
        with queue.lock() as pending:
            indices = [i for i in pending if isinstance(i, int)]
        for index in indices:
            if 0 <= index < len(items):
                yield items[index]

    return upcoming

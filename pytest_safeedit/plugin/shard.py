"""Deterministic shards of a run's SafeEdit cases, balanced by category."""

from __future__ import annotations

from collections.abc import Sequence

import pytest


def select_shard(items: Sequence[pytest.Item], index: int, count: int) -> tuple[list[pytest.Item], list[pytest.Item]]:
    """Items of shard ``index`` (1-based) of ``count``, and the others.

    All probes of a case stay together. Within each category the cases, sorted by suite and id, are
    dealt round-robin, starting each category where the previous one stopped, so shard sizes differ by
    at most one case per category. Other tests run in every shard.
    """
    from pytest_safeedit.plugin.items import ProbeItem

    cases: dict[str, list[tuple[str, str]]] = {}
    for item in items:
        if isinstance(item, ProbeItem):
            key = (item.suite.key, item.case.id)
            bucket = cases.setdefault(item.case.category, [])
            if key not in bucket:
                bucket.append(key)
    shard_of: dict[tuple[str, str], int] = {}
    offset = 0
    for category in sorted(cases):
        for position, key in enumerate(sorted(cases[category])):
            shard_of[key] = (offset + position) % count
        offset += len(cases[category])
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        if isinstance(item, ProbeItem) and shard_of[(item.suite.key, item.case.id)] != index - 1:
            drop.append(item)
        else:
            keep.append(item)
    return keep, drop

"""Deterministic shards of a run's SafeEdit cases, balanced by category."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

#: A probe item's case as (category, (suite key, case id)); None for any other test.
CaseOf = Callable[[pytest.Item], "tuple[str, tuple[str, str]] | None"]


def select_shard(
    items: Sequence[pytest.Item], index: int, count: int, case_of: CaseOf
) -> tuple[list[pytest.Item], list[pytest.Item]]:
    """Items of shard ``index`` (1-based) of ``count``, and the others.

    All probes of a case stay together. Within each category the cases, sorted by suite and id, are
    dealt round-robin, starting each category where the previous one stopped, so shard sizes differ by
    at most one case per category. Other tests (``case_of`` gives None) run in every shard.
    """
    cases: dict[str, list[tuple[str, str]]] = {}
    for item in items:
        found = case_of(item)
        if found is not None:
            category, key = found
            bucket = cases.setdefault(category, [])
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
        found = case_of(item)
        if found is not None and shard_of[found[1]] != index - 1:
            drop.append(item)
        else:
            keep.append(item)
    return keep, drop

"""Prompt prefixes shared by several prompts (the chat template's preamble, an attack template wrapped
around different questions): which prefixes to prefill once, and which rows start from each.

A plan is made from token ids alone: a prefix tree over the prompts, whose shared branch points become
prefixes; each prompt starts from the deepest one it is under (leaving at least its last token to
compute), and each prefix is prefilled from the deepest kept prefix above it. The prefixes kept fit a
budget of cached tokens, the ones that spare the most recomputation first.

Rows that run with other weights (several cases' edits answered together) compute other keys and values, so
they share prefixes only within their weight group; where every group's weights are the same below some
block, a plan ``across`` groups lets rows of every group share a prefix, whose keys and values below that
block are then computed once and above it once per group (:mod:`pytest_safeedit.backends.below`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace

#: A prefix shorter than this is not worth a forward pass of its own.
MIN_SHARED_TOKENS = 16


@dataclass(frozen=True)
class Prefix:
    """A prefix to prefill once: the first ``length`` tokens of row ``row`` (and of every row in
    ``rows``), computed on top of prefix ``parent`` (an index into the plan's prefixes; None: from the
    start)."""

    row: int
    length: int
    parent: int | None
    rows: tuple[int, ...]


@dataclass(frozen=True)
class PrefixPlan:
    """The prefixes in the order they are prefilled (each after its parent), and each row's prefix
    (an index into ``prefixes``; None: the row is computed from its first token). ``across``: rows of
    every weight group share the prefixes (see :meth:`groups`)."""

    prefixes: tuple[Prefix, ...]
    of_row: tuple[int | None, ...]
    across: bool = False

    def groups(self, keys: Sequence[Hashable]) -> list[list[Hashable]]:
        """For each prefix, the weight groups (``keys``: each row's) whose rows start from it or from a
        prefix prefilled on top of it, in the order first met: the groups it is computed for."""
        needed = [dict.fromkeys(keys[row] for row in prefix.rows) for prefix in self.prefixes]
        for index in reversed(range(len(self.prefixes))):  # a parent comes before its children
            parent = self.prefixes[index].parent
            if parent is not None:
                needed[parent].update(needed[index])
        return [list(groups) for groups in needed]

    def shared(self, row: int) -> int:
        """The tokens of ``row`` its prefix holds (0 without one)."""
        index = self.of_row[row]
        return 0 if index is None else self.prefixes[index].length


def plan_prefixes(
    rows: Sequence[Sequence[int]],
    *,
    budget: int,
    groups: Sequence[Hashable] | None = None,
    below: float | None = None,
    min_tokens: int = MIN_SHARED_TOKENS,
) -> PrefixPlan:
    """The prefixes shared by at least two of ``rows`` (token ids), of at least ``min_tokens`` tokens,
    whose cached tokens add up to at most ``budget``. Rows share only with rows of the same ``groups``
    entry (rows that run with other weights compute other keys and values), unless ``below`` is given:
    the share of a prefix's keys and values that every group computes alike (the layers below the lowest
    edited block, as a share of all layers). Rows of every group then share prefixes (the plan is
    ``across`` groups), and a prefix's cached tokens count that share once and the rest once for each
    group of the rows under it."""
    labels = list(groups) if groups is not None else [None] * len(rows)
    keys = labels if below is None else [None] * len(rows)
    points = _branch_points(rows, keys, min_tokens)
    costs = {key: len(key[1]) for key in points}
    if below is not None:
        for key in points:
            tokens = key[1]
            kinds = len({labels[i] for i, row in enumerate(rows) if len(row) > len(tokens) and _starts(row, tokens)})
            costs[key] = math.ceil(len(tokens) * (below + (1 - below) * kinds))
    plan = _ordered(rows, keys, _spaced(_within_budget(points, costs, budget), min_tokens))
    return plan if below is None else replace(plan, across=True)


#: A prefix: the weights its rows run with, and its tokens.
Key = tuple[Hashable, tuple[int, ...]]


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix of two token rows."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _branch_points(rows: Sequence[Sequence[int]], keys: Sequence[Hashable], min_tokens: int) -> dict[Key, int]:
    """The prefix tree's shared nodes: the longest common prefix of each two rows next to each other in
    sorted order (less a token, so that both keep one to compute), with the number of rows under it."""
    order = sorted(range(len(rows)), key=lambda i: (repr(keys[i]), list(rows[i])))
    points: dict[Key, int] = {}
    for a, b in zip(order, order[1:]):
        length = min(_lcp(rows[a], rows[b]), len(rows[a]) - 1, len(rows[b]) - 1)
        if keys[a] == keys[b] and length >= min_tokens:
            points[(keys[a], tuple(rows[a][:length]))] = 0
    for key in points:
        group, tokens = key
        points[key] = sum(
            1 for i, row in enumerate(rows) if keys[i] == group and len(row) > len(tokens) and _starts(row, tokens)
        )
    return points


def _starts(row: Sequence[int], tokens: tuple[int, ...]) -> bool:
    return tuple(row[: len(tokens)]) == tokens


def _within_budget(points: dict[Key, int], costs: dict[Key, int], budget: int) -> list[Key]:
    """The nodes kept, the most tokens spared (length x rows under it) first, while their cached tokens
    (``costs``) fit ``budget``; shortest first."""
    kept: list[Key] = []
    used = 0
    for key, _ in sorted(points.items(), key=lambda kv: (-len(kv[0][1]) * kv[1], repr(kv[0]))):
        if used + costs[key] <= budget:
            kept.append(key)
            used += costs[key]
    return sorted(kept, key=lambda key: (len(key[1]), repr(key)))


def _spaced(kept: Sequence[Key], min_tokens: int) -> list[Key]:
    """The kept nodes (shortest first) less those that add fewer than ``min_tokens`` tokens to their deepest
    kept ancestor: a forward pass of its own costs more than the few tokens its rows then compute again
    (on the CPU a one-token pass of SmolLM2 costs as much as some 25 tokens of a long prefill)."""
    spaced: list[Key] = []
    for group, tokens in kept:
        above = [len(other) for other_group, other in spaced if other_group == group and _starts(tokens, other)]
        if len(tokens) - max(above, default=0) >= min_tokens:
            spaced.append((group, tokens))
    return spaced


def _ordered(rows: Sequence[Sequence[int]], keys: Sequence[Hashable], kept: Sequence[Key]) -> PrefixPlan:
    """The kept prefixes, shortest first, each with its deepest kept ancestor; each row with the deepest
    kept prefix it starts with (leaving it a token to compute)."""

    def deepest(group: Hashable, tokens: Sequence[int], limit: int) -> int | None:
        best = None
        for i, (other_group, other) in enumerate(kept):
            if other_group == group and len(other) <= limit and _starts(tokens, other):
                best = i
        return best

    of_row = [deepest(keys[row], tokens, len(tokens) - 1) for row, tokens in enumerate(rows)]
    prefixes = []
    for i, (group, tokens) in enumerate(kept):
        first = next(r for r in range(len(rows)) if keys[r] == group and _starts(rows[r], tokens))
        users = tuple(row for row, chosen in enumerate(of_row) if chosen == i)
        prefixes.append(Prefix(first, len(tokens), deepest(group, tokens, len(tokens) - 1), users))
    return PrefixPlan(tuple(prefixes), tuple(of_row))


def with_stored(
    plan: PrefixPlan, rows: Sequence[Sequence[int]], stored: Sequence[int], min_tokens: int = MIN_SHARED_TOKENS
) -> PrefixPlan:
    """``plan`` with each row whose kept prefix (``stored[row]`` of its first tokens were kept from an
    earlier call: :mod:`pytest_safeedit.backends.stored`) is at least ``min_tokens`` longer than its planned
    one starting from that instead (leaving it a token to compute); rows with the same such prefix share
    it. The added prefixes come last, on no parent: they are read from the store, not computed."""
    prefixes = list(plan.prefixes)
    of_row = list(plan.of_row)
    added: dict[tuple[int, ...], int] = {}
    for row, tokens in enumerate(rows):
        length = min(stored[row], len(tokens) - 1)
        if length - plan.shared(row) < min_tokens:
            continue
        key = tuple(tokens[:length])
        if key not in added:
            added[key] = len(prefixes)
            prefixes.append(Prefix(row, length, None, ()))
        of_row[row] = added[key]
    users: dict[int, list[int]] = {}
    for row, index in enumerate(of_row):
        if index is not None:
            users.setdefault(index, []).append(row)
    prefixes = [replace(prefix, rows=tuple(users.get(i, ()))) for i, prefix in enumerate(prefixes)]
    return replace(plan, prefixes=tuple(prefixes), of_row=tuple(of_row))

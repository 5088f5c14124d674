"""Generation batches cut by tokens: bounded in rows, padded tokens, cache tokens and padding share."""

from __future__ import annotations

import pytest

from pytest_safeedit.backends.batching import BatchLimits, token_batches


def test_prompts_go_longest_first_and_every_prompt_once() -> None:
    lengths = [5, 40, 8, 40, 6]
    batches = token_batches(lengths, BatchLimits(rows=64, tokens=10_000))
    assert batches == [[1, 3], [2, 4, 0]]  # 8 beside the two 40s would be over a quarter padding


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (BatchLimits(rows=2, tokens=10_000), [[0, 1], [2, 3], [4]]),
        (BatchLimits(rows=64, tokens=30), [[0, 1, 2], [3, 4]]),
        (BatchLimits(rows=64, tokens=10_000, cache_tokens=40, reserve=10), [[0, 1], [2, 3], [4]]),
        (BatchLimits(rows=64, tokens=10_000), [[0, 1, 2, 3, 4]]),
    ],
)
def test_a_batch_stops_at_each_limit(limits: BatchLimits, expected: list[list[int]]) -> None:
    assert token_batches([10, 10, 10, 9, 9], limits) == expected


def test_padding_share_is_capped() -> None:
    lengths = [100, 90, 80, 70, 60, 50]
    for cap in (0.0, 0.1, 0.25, 0.5):
        for batch in token_batches(lengths, BatchLimits(rows=64, tokens=10_000, pad_share=cap)):
            width = max(lengths[i] for i in batch)
            assert width * len(batch) - sum(lengths[i] for i in batch) <= cap * width * len(batch)
    assert len(token_batches(lengths, BatchLimits(rows=64, tokens=10_000, pad_share=0.0))) == 6


def test_a_prompt_over_the_budget_still_gets_a_batch_of_its_own() -> None:
    assert token_batches([500, 3, 3], BatchLimits(rows=8, tokens=100)) == [[0], [1, 2]]
    assert token_batches([], BatchLimits(rows=8, tokens=100)) == []


def test_a_batch_must_hold_something() -> None:
    with pytest.raises(ValueError, match="at least one row and one token"):
        BatchLimits(rows=0, tokens=10)

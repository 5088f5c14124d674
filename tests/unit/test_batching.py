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


def test_a_shared_prefix_counts_against_the_cache_not_the_token_budget() -> None:
    """Rows of 600 tokens whose first 580 were computed beforehand compute 20 each: 30 of them are 600
    padded tokens to compute, within a budget of 1,000; the KV cache still bounds them."""
    lengths, shared = [600] * 30, [580] * 30
    assert token_batches(lengths, BatchLimits(rows=64, tokens=1_000), shared) == [list(range(30))]
    assert token_batches(lengths, BatchLimits(rows=64, tokens=100), shared) == [[0, 1, 2, 3, 4]] + [
        list(range(i, i + 5)) for i in range(5, 30, 5)
    ]
    capped = token_batches(lengths, BatchLimits(rows=64, tokens=1_000, cache_tokens=6_400, reserve=40), shared)
    assert [len(batch) for batch in capped] == [10, 10, 10]

"""Generation batches cut by tokens: prompts sorted by length, each batch bounded in rows, in padded
prompt tokens and in its share of padding, so that a batch of long prompts stays small and short prompts
never carry a long one's padding.

A prompt may start from a shared prefix whose keys and values are already computed
(:mod:`pytest_safeedit.backends.prefix`): a batch then lays each row out as its prefix (right-aligned in the
batch's prefix span) and its fresh tokens (right-aligned after it); only the fresh span is computed, so
prompts are sorted, and padding and the token budget counted, by their fresh tokens. The prefix span
costs the batch memory (bounded by ``cache_tokens``, and by the rows) but no prefill: on the CPU a
decoding step of a few rows costs nearly as much as one of many (the weights are read once per step), so
rows that share an attack template's prefix go together however long it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: Most padding a batch may carry, as a share of its padded tokens (rows x longest prompt).
MAX_PAD_SHARE = 0.25


@dataclass(frozen=True)
class BatchLimits:
    """What one batch may hold.

    Args:
        rows: most rows (the batch size).
        tokens: most padded prompt tokens the batch computes, rows x its longest prompt less the shared
            prefixes computed beforehand (``--safeedit-batch-tokens``).
        cache_tokens: most tokens in the KV cache at the end, rows x (longest prompt + ``reserve``);
            None: no limit.
        reserve: new tokens each row may add to the cache.
        pad_share: most padding, as a share of the padded prompt tokens.
    """

    rows: int
    tokens: int
    cache_tokens: int | None = None
    reserve: int = 0
    pad_share: float = MAX_PAD_SHARE

    def __post_init__(self) -> None:
        if self.rows < 1 or self.tokens < 1:
            raise ValueError(
                f"a batch must hold at least one row and one token (rows={self.rows}, tokens={self.tokens})"
            )

    def admit(self, rows: Sequence[tuple[int, int]]) -> bool:
        """Whether prompts of (length, shared prefix) ``rows`` fit one batch."""
        count = len(rows)
        prefix = max(shared for _, shared in rows)
        fresh = max(length - shared for length, shared in rows)
        if count > self.rows or count * fresh > self.tokens:
            return False
        if self.cache_tokens is not None and count * (prefix + fresh + self.reserve) > self.cache_tokens:
            return False
        computed = count * fresh
        return computed - sum(length - shared for length, shared in rows) <= self.pad_share * computed


def token_batches(lengths: Sequence[int], limits: BatchLimits, shared: Sequence[int] | None = None) -> list[list[int]]:
    """The indices of ``lengths`` in batches, the most fresh tokens first (an out-of-memory shows at
    once), each batch as many of the next prompts as ``limits`` admit; a prompt that fits no batch alone
    gets its own. ``shared``: the tokens of each prompt's prefix computed beforehand (default none).
    Equal lengths keep their order."""
    reused = list(shared) if shared is not None else [0] * len(lengths)
    order = sorted(range(len(lengths)), key=lambda i: (reused[i] - lengths[i], -lengths[i], i))
    batches: list[list[int]] = []
    for index in order:
        batch = batches[-1] if batches else None
        if batch is not None and limits.admit([(lengths[i], reused[i]) for i in (*batch, index)]):
            batch.append(index)
        else:
            batches.append([index])
    return batches

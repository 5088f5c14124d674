"""Generation batches cut by tokens: prompts sorted by length, each batch bounded in rows, in padded
prompt tokens and in its share of padding, so that a batch of long prompts stays small and short prompts
never carry a long one's padding."""

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
        tokens: most padded prompt tokens, rows x longest prompt (``--safeedit-batch-tokens``).
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

    def admit(self, lengths: Sequence[int]) -> bool:
        """Whether prompts of ``lengths`` (the longest first) fit one batch."""
        rows, width = len(lengths), lengths[0]
        padded = rows * width
        if rows > self.rows or padded > self.tokens:
            return False
        if self.cache_tokens is not None and rows * (width + self.reserve) > self.cache_tokens:
            return False
        return padded - sum(lengths) <= self.pad_share * padded


def token_batches(lengths: Sequence[int], limits: BatchLimits) -> list[list[int]]:
    """The indices of ``lengths`` in batches, the longest prompts first (an out-of-memory shows at once),
    each batch as many of the next prompts as ``limits`` admit; a prompt that fits no batch alone gets its
    own. Equal lengths keep their order."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for index in order:
        batch = batches[-1] if batches else None
        if batch is not None and limits.admit([lengths[i] for i in (*batch, index)]):
            batch.append(index)
        else:
            batches.append([index])
    return batches

"""Overlong reward: DAPO's soft length penalty (Yu et al. 2025, "DAPO", eq. 13).

With a maximum length L_max and a soft buffer L_cache, a completion of |y| tokens gets 0 up to
L_max - L_cache, a linear penalty down to -1 inside the buffer, and -1 beyond L_max. Lengths are token ids
when the sample has them, else whitespace words (a stated approximation for rows without ids).
This module knows nothing about truncation: a cut-off completion is simply long.
"""

from __future__ import annotations

from rewards.registry import reward
from rewards.sample import Sample


def soft_overlong_penalty(length: int, max_length: int, cache_length: int) -> float:
    """DAPO's R_length(y).

    >>> soft_overlong_penalty(90, max_length=100, cache_length=20)   # in the buffer: (80 - 90) / 20
    -0.5
    >>> soft_overlong_penalty(80, 100, 20), soft_overlong_penalty(101, 100, 20)
    (0.0, -1.0)
    """
    if not 0 < cache_length <= max_length:
        raise ValueError(f"need 0 < cache_length <= max_length; got cache_length={cache_length}, "
                         f"max_length={max_length}")
    free = max_length - cache_length
    if length <= free:
        return 0.0
    if length <= max_length:
        return (free - length) / cache_length
    return -1.0


@reward("overlong")
def overlong_penalty(sample: Sample, max_length: int = 4096, cache_length: int = 1024) -> float:
    """The soft overlong penalty of the completion's length.

    >>> overlong_penalty(Sample(prompt="hi", completion="x", completion_ids=list(range(12))),
    ...                  max_length=10, cache_length=4)
    -1.0
    """
    length = len(sample.completion_ids) if sample.completion_ids else len(sample.completion.split())
    return soft_overlong_penalty(length, max_length, cache_length)

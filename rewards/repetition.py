"""Repetition reward: a penalty for repeated n-grams (the rule score iterative alignment uses against
repetition collapse).

The rate is the share of n-grams that repeat an earlier one: ``1 - unique / total``. It is computed on token
ids when the sample has them (what the model actually repeats), else on whitespace words. The reward is the
negative rate, in [-1, 0]. This module knows nothing about tokenizers.
"""

from __future__ import annotations

from typing import Sequence

from rewards.registry import reward
from rewards.sample import Sample


def repetition_rate(tokens: Sequence, n: int = 4) -> float:
    """Share of the n-grams of `tokens` that already occurred; 0 when there are none.

    >>> repetition_rate("a b a b a b".split(), n=2)  # ab ba ab ba ab: 2 unique of 5
    0.6
    >>> repetition_rate("the cat sat on the mat".split(), n=2)
    0.0
    """
    if n < 1:
        raise ValueError(f"n-gram size must be >= 1, got {n}")
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


@reward("repetition")
def repetition_penalty(sample: Sample, n: int = 4) -> float:
    """Minus the n-gram repetition rate of the completion.

    >>> repetition_penalty(Sample(prompt="hi", completion="go go go go go"), n=1)  # 1 unique of 5
    -0.8
    """
    tokens = sample.completion_ids if sample.completion_ids else sample.completion.split()
    return -repetition_rate(list(tokens), n) or 0.0  # never -0.0 in logs

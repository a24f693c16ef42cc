"""Counting reward: the answer's integer must equal the gold count exactly.

The count is read from the ``\\boxed{}`` of the answer if there is one, else from the answer text: the last
integer written in digits, or a number word up to twenty ("three apples"). No partial credit: an off-by-one
count is wrong. This module knows nothing about images or detectors.
"""

from __future__ import annotations

import re

from rewards.registry import reward
from rewards.sample import Sample

_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
          "sixteen seventeen eighteen nineteen twenty").split()
_NUMBER_RE = re.compile(r"-?\d[\d,]*|\b(?:" + "|".join(_WORDS) + r")\b", re.IGNORECASE)


def read_count(text: str) -> int | None:
    """The last integer in `text` (digits or a number word), or None.

    >>> read_count("I see 3 cats and 12 dogs")
    12
    >>> read_count("There are seven apples.")
    7
    >>> read_count("1,024 stars"), read_count("none")
    (1024, None)
    """
    matches = _NUMBER_RE.findall(text)
    if not matches:
        return None
    last = matches[-1].lower()
    if last in _WORDS:
        return _WORDS.index(last)
    return int(last.replace(",", ""))


@reward("counting")
def counting_reward(sample: Sample) -> float:
    """1.0 for the exact count, else 0.0.

    >>> counting_reward(Sample(prompt="How many? /no_think", completion="There are 4 birds.", ground_truth=4))
    1.0
    """
    gold = read_count(str(sample.ground_truth))
    if gold is None:
        raise ValueError(f"the counting reward needs an integer ground truth; got {sample.ground_truth!r}")
    text = sample.parsed.boxed if sample.parsed.boxed is not None else (sample.parsed.answer or "")
    # A decimal such as "3.5" is not a count: reject it rather than reading its last digits.
    if re.search(r"\d\.\d", text):
        return 0.0
    return float(read_count(text) == gold)

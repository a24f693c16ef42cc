"""Multiple-choice reward: the chosen option letter(s) must equal the gold letter(s).

The choice is read from the ``\\boxed{}`` of the answer if there is one, else from the answer text, in this
order: the whole text is a letter ("B", "(B)", "B."); a letter after "answer is"/"option"/"choice"; a
parenthesised letter "(B)"; a letter opening the text ("B. red"). Multi-select gold ("A,C") must be matched
as a set. Options are A-J. This module knows nothing about the option texts.
"""

from __future__ import annotations

import re

from rewards.registry import reward
from rewards.sample import Sample

_L = r"[A-J]"
_PATTERNS = (
    re.compile(rf"^\(?({_L}(?:\s*,\s*{_L})*)\)?\.?$"),
    re.compile(rf"(?:answer|option|choice)\s*(?:is|:)?\s*\(?({_L}(?:\s*(?:,|and)\s*{_L})*)\)?(?![a-z])",
               re.IGNORECASE),
    re.compile(rf"\(({_L})\)"),
    re.compile(rf"^({_L})[.):]\s"),
)


def read_choice(text: str) -> frozenset[str] | None:
    """The option letters a text picks, or None.

    >>> sorted(read_choice("The answer is (C)."))
    ['C']
    >>> sorted(read_choice("A, C"))
    ['A', 'C']
    >>> read_choice("A cat sat on the mat") is None
    True
    """
    text = re.sub(r"\\text\{([^{}]*)\}", r"\1", text.strip())
    for pattern in _PATTERNS:
        found = pattern.findall(text)
        if found:
            return frozenset(letter.upper() for letter in re.findall(r"\b([A-Ja-j])\b", found[-1]))
    return None


@reward("choice")
def choice_reward(sample: Sample) -> float:
    """1.0 when the picked option(s) equal the gold option(s).

    >>> choice_reward(Sample(prompt="Which? /no_think", completion="The answer is B.", ground_truth="B"))
    1.0
    """
    gold = read_choice(str(sample.ground_truth))
    if not gold:
        raise ValueError(f"the choice reward needs option letters A-J as ground truth; got {sample.ground_truth!r}")
    text = sample.parsed.boxed if sample.parsed.boxed is not None else (sample.parsed.answer or "")
    return float(read_choice(text) == gold)

"""The `answer` reward: one reward for a mixture of task kinds, checking each sample the way its task is checked.

A multimodal RL batch mixes arithmetic, counting, grounding and OCR prompts; each row says how its answer is
verified in a `kind` column (the cold-start sources write it): ``math`` (math-verify equality), ``count`` (exact
integer), ``boxes`` (matched IoU, a score in [0, 1] rather than pass/fail, so RL sees partial progress), ``text``
(normalised exact text; math-verify would read ``red`` as the product r*e*d) and ``order`` (the exact integer
sequence). A row without `kind` is math. This module knows nothing about where the rows come from.
"""

from __future__ import annotations

import re

from rewards.counting import counting_reward
from rewards.grounding import iou_reward
from rewards.math_answer import math_reward
from rewards.registry import reward
from rewards.sample import Sample

KINDS = ("math", "count", "boxes", "text", "order")


def normalise_text(text: str) -> str:
    """
    >>> normalise_text("  \\\\text{Red}. ")
    'red'
    """
    text = re.sub(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}", r"\1", text)
    return re.sub(r"[\s.$]+", " ", text).strip().casefold()


def integers(text: str) -> list[int]:
    return [int(v) for v in re.findall(r"-?\d+", text)]


def answer_score(kind: str, sample: Sample) -> float:
    """The sample's score under its task kind: 0 or 1, except `boxes` (matched IoU)."""
    if kind == "math":
        return math_reward(sample)
    if kind == "count":
        return counting_reward(sample)
    if kind == "boxes":
        return iou_reward(sample)
    final = sample.parsed.final_answer
    if kind == "text":
        return float(normalise_text(final) == normalise_text(str(sample.ground_truth)))
    if kind == "order":
        return float(bool(final) and integers(final) == integers(str(sample.ground_truth)))
    raise ValueError(f"no verifier for answer kind {kind!r}; a row's `kind` must be one of {KINDS}")


@reward("answer")
def task_answer_reward(sample: Sample) -> float:
    """The row's own check, chosen by its `kind` column (math when it has none).

    >>> task_answer_reward(Sample(prompt="How many? /no_think", completion="3", ground_truth="3",
    ...                           columns={"kind": "count"}))
    1.0
    >>> task_answer_reward(Sample(prompt="Find it /no_think", completion="[[0,0,10,10]]",
    ...                           ground_truth="[[0,0,10,20]]", columns={"kind": "boxes"}))
    0.5
    """
    return answer_score(sample.columns.get("kind") or "math", sample)

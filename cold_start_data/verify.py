"""Verification of one response: its format for the mode, and its answer against the task's gold answer.

The checks are those of `rewards` (so a sample kept here is one the RL rewards would score 1): the format
check of `rewards.format`, math-verify equality (`rewards.math_answer`), exact counts (`rewards.counting`),
matched IoU (`rewards.grounding`). Two kinds have no reward there and are checked here: "text" (normalised
exact text, stricter than math-verify, which would read ``red`` as the product r*e*d) and "order" (the
exact integer sequence). This module knows nothing about teachers or the mixer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from keye_vl.chat import Mode, parse_mode
from rewards.counting import counting_reward
from rewards.format import format_problems
from rewards.grounding import iou_reward
from rewards.math_answer import math_reward, parse_gold
from rewards.sample import Sample

IOU_THRESHOLD = 0.5


@dataclass
class Verdict:
    correct: bool
    format_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.correct and not self.format_problems

    @property
    def reason(self) -> str:
        if self.format_problems:
            return "format: " + "; ".join(self.format_problems)
        return "" if self.correct else "wrong answer"


def normalise_text(text: str) -> str:
    """
    >>> normalise_text("  \\\\text{Red}. ")
    'red'
    """
    text = re.sub(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}", r"\1", text)
    return re.sub(r"[\s.$]+", " ", text).strip().casefold()


def integers(text: str) -> list[int]:
    return [int(v) for v in re.findall(r"-?\d+", text)]


def answer_correct(kind: str, sample: Sample, iou_threshold: float = IOU_THRESHOLD) -> bool:
    if kind == "math":
        return math_reward(sample) == 1.0
    if kind == "count":
        return counting_reward(sample) == 1.0
    if kind == "boxes":
        return iou_reward(sample) >= iou_threshold
    final = sample.parsed.final_answer
    if kind == "text":
        return normalise_text(final) == normalise_text(str(sample.ground_truth))
    if kind == "order":
        return bool(final) and integers(final) == integers(str(sample.ground_truth))
    raise ValueError(f"no verifier for answer kind {kind!r}")


def verify(response: str, mode: str | Mode, kind: str, answer: str, messages: list[dict] | None = None,
           iou_threshold: float = IOU_THRESHOLD) -> Verdict:
    """Format problems for `mode` and answer correctness of `response`.

    >>> verify("<think>7+5=12</think><answer>\\\\boxed{12}</answer>", "think", "math", "12").ok
    True
    >>> verify("\\\\boxed{13}", "no_think", "math", "12").reason
    'wrong answer'
    """
    mode = parse_mode(mode)
    sample = Sample(prompt=messages or [{"role": "user", "content": ""}], completion=response, mode=mode,
                    ground_truth=answer)
    return Verdict(answer_correct(kind, sample, iou_threshold), format_problems(response, mode))


def gold_problem(kind: str, answer: str) -> str | None:
    """Why a gold answer cannot be verified (None when it can): user data is checked with this."""
    text = str(answer).strip()
    if not text:
        return "empty answer"
    if kind == "math" and all(isinstance(v, str) for v in parse_gold(text)):  # only the raw string came back
        return f"math-verify cannot parse the answer {text!r}"
    if kind == "count" and not re.fullmatch(r"\d+", text):
        return f"a count answer must be a non-negative integer, got {text!r}"
    if kind == "boxes" and (not integers(text) or len(integers(text)) % 4):
        return f"a boxes answer needs [[x1,y1,x2,y2], ...] in 0-1000 coordinates, got {text!r}"
    if kind == "order" and not integers(text):
        return f"an order answer needs integers, got {text!r}"
    return None

"""Verification of one response: its format for the mode, and its answer against the task's gold answer.

The checks are those of `rewards` (so a sample kept here is one the RL rewards would score 1): the format
check of `rewards.format` and the per-kind answer check of `rewards.task_answer` (math-verify equality, exact
counts, matched IoU, normalised text, integer order). This module knows nothing about teachers or the mixer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from keye_protocol.chat import Mode, parse_mode
from rewards.format import format_problems
from rewards.math_answer import parse_gold
from rewards.sample import Sample
from rewards.task_answer import answer_score, integers

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


def answer_correct(kind: str, sample: Sample, iou_threshold: float = IOU_THRESHOLD) -> bool:
    """Pass/fail under the task's check (`rewards.task_answer`); boxes pass at `iou_threshold` IoU."""
    score = answer_score(kind, sample)
    return score >= iou_threshold if kind == "boxes" else score == 1.0


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

"""Held-out evaluation: greedy answers per mode, accuracy with a 95% interval, think-rate in auto mode.

Accuracy intervals are Wilson score intervals (they stay inside [0, 1] and behave at 0% and 100%, where the
normal approximation does not).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion.

    >>> [round(x, 3) for x in wilson_interval(50, 100)]
    [0.404, 0.596]
    >>> wilson_interval(0, 0)
    (0.0, 1.0)
    """
    if total == 0:
        return 0.0, 1.0
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class ModeAccuracy:
    mode: str
    correct: int
    total: int
    reasoned: int  # responses that contained reasoning (the think-rate numerator)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.total)

    def describe(self) -> str:
        low, high = self.interval
        return f"{self.mode} {100 * self.accuracy:.1f}% [{100 * low:.1f}, {100 * high:.1f}] (n={self.total})"

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        low, high = self.interval
        out = {f"{prefix}/accuracy/{self.mode}": self.accuracy, f"{prefix}/accuracy_low/{self.mode}": low,
               f"{prefix}/accuracy_high/{self.mode}": high}
        if self.mode == "auto_think":
            out[f"{prefix}/think_rate"] = self.reasoned / self.total if self.total else 0.0
        return out


def accuracy_by_mode(rows: list[tuple[str, bool, bool]]) -> dict[str, ModeAccuracy]:
    """rows: (mode, correct, reasoned) per held-out prompt."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for mode, correct, reasoned in rows:
        c = counts[mode]
        c[0] += int(correct)
        c[1] += 1
        c[2] += int(reasoned)
    return {mode: ModeAccuracy(mode, c[0], c[1], c[2]) for mode, c in sorted(counts.items())}


# ------------------------------------------------------------------------------------------------ the suite
REPETITIVE = 0.2  # a 4-gram repetition rate above this marks an answer as repetitive (clean teacher answers: < 0.1)


def word_repetition(text: str) -> float:
    """The suite's repetition measure: the 4-gram repetition rate of the words (tokenizer-independent).

    >>> round(word_repetition("so 2 + 2 = 4. so 2 + 2 = 4."), 3)  # 3 of its 9 four-grams repeat
    0.333
    """
    from rewards.repetition import repetition_rate

    return repetition_rate(text.split(), 4)


@dataclass
class Answer:
    """One held-out answer as the suite counts it."""

    mode: str
    task: str  # the row's `source` (arithmetic, counting, grounding, ...), "" when the data has none
    score: float  # the evaluation reward (IoU for boxes): correct when >= 0.5
    reasoned: bool
    format_ok: bool
    repetition: float  # 4-gram repetition rate of the answer's words
    difficulty: str | None = None  # "easy" / "hard" where the row says (auto_think rows of the cold start)

    @property
    def correct(self) -> bool:
        return self.score >= 0.5


def _rate(hits: int, n: int) -> dict:
    return {"rate": hits / n if n else 0.0, "interval": list(wilson_interval(hits, n)), "n": n}


def suite_summary(answers: list[Answer]) -> dict:
    """Per task accuracy and mean score, the format-error and repetition rates, and for auto_think prompts of
    known difficulty how often the model chose to think and how accurate each choice was."""
    by_task: dict[str, list[Answer]] = defaultdict(list)
    for a in answers:
        by_task[a.task or "all"].append(a)
    tasks = {task: {**_rate(sum(a.correct for a in group), len(group)),
                    "score": sum(a.score for a in group) / len(group)} for task, group in sorted(by_task.items())}
    auto = defaultdict(list)
    for a in answers:
        if a.mode == "auto_think" and a.difficulty:
            auto[a.difficulty].append(a)
    choices = {}
    for difficulty, group in sorted(auto.items()):
        thought = [a for a in group if a.reasoned]
        direct = [a for a in group if not a.reasoned]
        choices[difficulty] = {"think": _rate(len(thought), len(group)),
                               "accuracy_think": _rate(sum(a.correct for a in thought), len(thought)),
                               "accuracy_direct": _rate(sum(a.correct for a in direct), len(direct))}
    n = len(answers)
    return {"tasks": tasks, "auto_think": choices,
            "format_errors": _rate(sum(not a.format_ok for a in answers), n),
            "repetitive": _rate(sum(a.repetition > REPETITIVE for a in answers), n),
            "repetition_mean": sum(a.repetition for a in answers) / n if n else 0.0}

"""Complexity judges: label an auto_think prompt complex (analyse, reason, answer) or simple (analyse, answer).

The paper has a model judge label prompts; here two stand-ins that need no large model:
- `StepCountJudge`: complex when the task's own solver needs at least `min_steps` steps;
- `PassRateJudge`: complex when a teacher model's direct (no_think) answers are right less often than
  `threshold` (the "does it need thinking?" question asked empirically).
Both return the verdict and a short reason that goes into the ``<analysis>``. This module knows nothing about
formats: `cold_start_data.formatting` words the analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cold_start_data.tasks import Task


@dataclass
class Judgement:
    complex: bool
    reason: str


class Judge(Protocol):
    def judge(self, tasks: list[Task]) -> list[Judgement]: ...


@dataclass
class StepCountJudge:
    min_steps: int = 3

    def judge(self, tasks: list[Task]) -> list[Judgement]:
        """
        >>> from cold_start_data.sources.arithmetic import addition_task
        >>> [j.complex for j in StepCountJudge(3).judge([addition_task(3, 4), addition_task(37, 45)])]
        [False, True]
        """
        out = []
        for task in tasks:
            n = task.num_steps
            out.append(Judgement(n >= self.min_steps, f"solving it takes {n} step{'s' * (n != 1)}"))
        return out


class PassRateJudge:
    """Samples `n` direct answers per task from `teacher` (a `ModelTeacher`) and calls a task complex when
    fewer than `threshold` of them are right."""

    def __init__(self, teacher, n: int = 4, threshold: float = 0.5):
        self.teacher, self.n, self.threshold = teacher, n, threshold

    def judge(self, tasks: list[Task]) -> list[Judgement]:
        rates = self.teacher.pass_rates(tasks, mode="no_think", n=self.n)
        return [Judgement(rate < self.threshold, f"direct answers were right {round(rate * self.n)} of {self.n} "
                                                 f"times") for rate in rates]

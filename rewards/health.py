"""Reward health: how often each reward component failed, per step and over a window of steps, and the bound.

A reward that fails on every sample still yields numbers (``on_error: zero`` trains on zeros, ``skip`` on
nothing), so without a bound a run goes on to its end and exits 0 having learned nothing from its reward.
`RewardHealth` counts, per step, the samples whose reward failed: in all, and per component (a combined reward
names the failing component, `rewards.combine`; a timeout or a crash names none). `check` raises
`RewardHealthError` when, over the last `window` steps, a component, or the reward as a whole, failed on more than
`max_error_rate` of the samples; the message gives the rate, the component and its first error, whose location
is the line of the reward's own file. This module knows nothing about the RL step: a step is whatever the caller
closes with `end_step`, and a step may score several batches (refills).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from rewards.result import RewardResult

WHOLE = None  # the key of "any error" in the counts (components are named by strings)


class RewardHealthError(RuntimeError):
    """The reward failed on too many samples: the run stops rather than train on what failed."""


@dataclass
class ErrorCounts:
    """Samples scored and, per component (`WHOLE`: any error), how many failed and the first error's message."""

    samples: int = 0
    failed: Counter = field(default_factory=Counter)
    first: dict = field(default_factory=dict)

    def add(self, results: list[RewardResult]) -> None:
        for result in results:
            self.samples += 1
            if result.error is None:
                continue
            for name, message in [(WHOLE, result.message), *result.component_errors.items()]:
                self.failed[name] += 1
                self.first.setdefault(name, message)

    def merge(self, other: ErrorCounts) -> None:
        """Add `other`'s counts; first messages stay the earliest."""
        self.samples += other.samples
        self.failed.update(other.failed)
        for name, message in other.first.items():
            self.first.setdefault(name, message)

    def rate(self, name: str | None = WHOLE) -> float:
        return self.failed[name] / self.samples if self.samples else 0.0

    def components(self) -> list[str]:
        return sorted(name for name in self.failed if name is not WHOLE)

    def metrics(self) -> dict[str, float]:
        """`reward/error_rate` (samples with any error) and `reward/error_rate/<component>`."""
        return {"reward/error_rate": self.rate(), **{f"reward/error_rate/{n}": self.rate(n) for n in self.components()}}

    def worst(self) -> tuple[str | None, float]:
        """The component failing most often, or `WHOLE` when errors name no component (timeouts, crashes)."""
        name = max(self.components(), key=self.rate, default=WHOLE)
        return (name, self.rate(name)) if self.rate(name) >= self.rate() else (WHOLE, self.rate())


class RewardHealth:
    """`record` each scored batch, `end_step` once per step (its metrics), then `check` (raises past the bound)."""

    def __init__(self, max_error_rate: float = 0.5, window: int = 3):
        if not 0.0 <= max_error_rate <= 1.0:
            raise ValueError(f"reward.max_error_rate must be a fraction in [0, 1], got {max_error_rate!r}")
        if window < 1:
            raise ValueError(f"reward.error_window must be at least 1 step, got {window!r}")
        self.max_error_rate, self.window = max_error_rate, window
        self.steps: list[ErrorCounts] = []  # the last `window` closed steps
        self.current, self.total = ErrorCounts(), ErrorCounts()

    def record(self, results: list[RewardResult]) -> None:
        self.current.add(results)
        self.total.add(results)

    def end_step(self) -> dict[str, float]:
        """Close the step: its error-rate metrics."""
        step, self.current = self.current, ErrorCounts()
        self.steps = [*self.steps, step][-self.window:]
        return step.metrics()

    def check(self, last_step: bool = False) -> None:
        """Raise `RewardHealthError` when the rate over the window is above the bound. Checked once the window is
        full (one bad step among good ones does not stop a run), and at a stage's last step when it is shorter."""
        if len(self.steps) < self.window and not last_step:
            return
        window = ErrorCounts()
        for step in self.steps:
            window.merge(step)
        name, rate = window.worst()
        if rate > self.max_error_rate:
            raise RewardHealthError(self._message(window, name, rate))

    def _message(self, window: ErrorCounts, name: str | None, rate: float) -> str:
        who = f"reward component {name!r}" if name is not WHOLE else "the reward"
        if name is WHOLE and window.components():  # mixed: some errors named a component, some (timeouts) none
            who += " (by component: " + ", ".join(f"{n!r} {window.rate(n):.0%}" for n in window.components()) + ")"
        steps = f"the last {len(self.steps)} step{'s' if len(self.steps) > 1 else ''}"
        return (f"{who} failed on {rate:.0%} of samples ({window.failed[name]} of {window.samples}) over {steps}, "
                f"above reward.max_error_rate={self.max_error_rate:g}; first error: {window.first[name]}. Fix the "
                f"reward (or the data columns it reads), or raise reward.max_error_rate in the recipe (1.0 turns "
                f"this check off)")

    def summary(self) -> dict[str, float]:
        """The whole stage's error rates (`reward/error_rate...`), for its end-of-run summary."""
        return self.total.metrics()

    def headline(self) -> str:
        """'reward errors: f 30% (9 of 30 samples)' for the end-of-run table; empty when nothing failed."""
        if not self.total.failed[WHOLE]:
            return ""
        name, rate = self.total.worst()
        who = name if name is not WHOLE else "reward"
        return f"reward errors: {who} {rate:.0%} ({self.total.failed[name]} of {self.total.samples} samples)"

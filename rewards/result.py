"""What scoring one sample produced: a total, named components, or a recorded error.

This module defines the shape of a reward's answer and checks it. It knows nothing about which function
produced the value or where it ran; the pool and the CLI both report through `RewardResult`.

A reward may return a number, a dict of named numbers, or None (TRL's "not applicable to this sample").
A dict's total is its "total" key (verl's "score" is accepted too) or, without one, the sum of its values.
A combined reward (`rewards.combine`) whose component failed keeps the other components' credit: its result has
the error and, in `component_errors`, which component failed and why.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from dataclasses import asdict, dataclass, field

# memory/output: the reward's process went over `memory_mb` / printed more than `output_mb` (rewards.reward_process);
# channel: the reward wrote into its own reply channel, so the bytes read were not its reply (rewards.channel)
ERROR_KINDS = ("exception", "timeout", "invalid", "crash", "memory", "output", "channel")


class InvalidReward(ValueError):
    """A reward returned something that is not a finite number, a dict of them, or None."""


@dataclass
class RewardResult:
    # with an error: the credit of the components that did score (None: none did); `on_error` decides what trains
    total: float | None
    components: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # one of ERROR_KINDS, or None
    message: str | None = None
    seconds: float = 0.0
    skipped: bool = False  # excluded from training by `on_error: skip` (or not applicable: total None)
    # component name -> its error message, for a combined reward (a timeout or crash names no component)
    component_errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def failed(cls, kind: str, message: str, seconds: float = 0.0) -> RewardResult:
        assert kind in ERROR_KINDS, kind
        return cls(total=None, error=kind, message=message, seconds=seconds)

    def to_dict(self) -> dict:
        return asdict(self)


def _short(value, limit: int = 200) -> str:
    """repr cut to `limit` characters: a reward may return something enormous."""
    try:
        text = repr(value)
    except Exception as error:  # noqa: BLE001 (repr itself can fail, e.g. a huge int's str limit)
        text = f"<unprintable: {type(error).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _finite(value, where: str, spec: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidReward(f"reward {spec!r} returned {type(value).__name__} {_short(value)} for {where}; expected a "
                            f"float, a dict[str, float], or None")
    try:
        value = float(value)
    except OverflowError:  # an int beyond float range (10**400): invalid for this sample, not a crash
        raise InvalidReward(f"reward {spec!r} returned a number too large for a float for {where} "
                            f"(about 10**{int(math.log10(abs(int(value))))})") from None
    if not math.isfinite(value):
        raise InvalidReward(f"reward {spec!r} returned {value} for {where}; rewards must be finite")
    return value


def normalize(raw, spec: str) -> tuple[float | None, dict[str, float]]:
    """(total, components) from a reward's raw return value, or InvalidReward naming `spec` and the fix.

    >>> normalize(0.5, "math")
    (0.5, {})
    >>> normalize({"iou": 0.25, "format": 1.0}, "mine")
    (1.25, {'iou': 0.25, 'format': 1.0})
    >>> normalize({"total": 2.0, "acc": 1.0}, "mine")
    (2.0, {'acc': 1.0})
    """
    if raw is None:
        return None, {}
    if isinstance(raw, bool):  # True/False from a checker: accept as 1.0/0.0, it is unambiguous
        return float(raw), {}
    if isinstance(raw, dict):
        if not raw:
            raise InvalidReward(f"reward {spec!r} returned an empty dict; expected at least one named component")
        values = {str(k): _finite(v, f"component {k!r}", spec) for k, v in raw.items() if v is not None}
        if not values:  # every component said "not applicable"
            return None, {}
        total_key = next((k for k in ("total", "score") if k in values), None)
        if total_key is not None:
            total = values.pop(total_key)
        else:
            total = sum(values.values())
        return total, values
    return _finite(raw, "the sample", spec), {}


def summarize(results: list[RewardResult]) -> dict[str, float]:
    """Batch metrics: mean total, error counts by kind, skipped and not-applicable counts, component means, and
    each component's error rate (the fraction of samples it failed on).

    >>> summarize([RewardResult(1.0, {"acc": 1.0}), RewardResult.failed("timeout", "slow")])["reward/errors/timeout"]
    1
    >>> failed_b = RewardResult(0.5, {"a": 0.5}, "exception", "b: KeyError", component_errors={"b": "KeyError"})
    >>> summarize([RewardResult(1.0, {"a": 1.0}), failed_b])["reward/error_rate/b"]
    0.5
    """
    totals = [r.total for r in results if r.total is not None and not r.skipped]
    metrics: dict[str, float] = {
        "reward/count": len(results),
        "reward/mean": sum(totals) / len(totals) if totals else float("nan"),
        "reward/errors": sum(r.error is not None for r in results),
        "reward/skipped": sum(r.skipped for r in results),
        "reward/not_applicable": sum(r.total is None and r.error is None for r in results),
    }
    for kind in ERROR_KINDS:
        metrics[f"reward/errors/{kind}"] = sum(r.error == kind for r in results)
    metrics["reward/error_rate"] = metrics["reward/errors"] / len(results) if results else 0.0
    names = sorted({k for r in results for k in r.components})
    for name in names:
        values = [r.components[name] for r in results if name in r.components]
        metrics[f"reward/components/{name}"] = sum(values) / len(values)
    failed = Counter(name for r in results for name in r.component_errors)
    for name in sorted(failed):
        metrics[f"reward/error_rate/{name}"] = failed[name] / len(results)
    return metrics

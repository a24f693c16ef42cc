"""Weighted combination of rewards, every component logged under its own name.

``combine({"math": 1.0, "format": 0.5})`` is one batched reward whose value per sample is a `RewardResult` with
total ``sum(w_i * r_i)`` and components ``{"math": r_math, "format": r_format, ...}``; a component that itself
returns a dict is logged as ``name/key`` too. A component that is not applicable (None) adds nothing to the total;
a sample for which every component is None is not applicable. A component that raises or returns an invalid value
fails only itself: the sample keeps the other components' credit (the failed one adds nothing) and records the
error, naming the component and the line of its own file that raised, in `component_errors`; `on_error` then
decides what trains. A component with options is given as
``{"reward_model": {"weight": 0.5, "options": {"model": "runs/x/rm"}}}``. This module knows nothing about workers.
"""

from __future__ import annotations

from collections.abc import Mapping

from rewards.adapters import LoadedReward
from rewards.registry import RewardSpecError, load_reward
from rewards.result import InvalidReward, RewardResult, normalize
from rewards.reward_process import describe
from rewards.sample import Sample


class Row:
    """One sample's running weighted sum over the components (`rewards.served` merges a split reward with it)."""

    def __init__(self):
        self.total, self.applicable, self.components, self.seconds = 0.0, False, {}, 0.0
        self.errors: list[tuple[str, str | None]] = []  # (kind, message); the first kind is the sample's
        self.component_errors: dict[str, str] = {}

    def add(self, name: str, weight: float, value: float, extra: dict) -> None:
        self.applicable = True
        self.components[name] = value
        self.total += weight * value
        self.components.update({f"{name}/{k}": v for k, v in extra.items()})

    def fail(self, name: str, kind: str, message: str) -> None:
        self.errors.append((kind, message))
        self.component_errors[name] = message

    def include(self, result: RewardResult) -> None:
        """A result summed elsewhere (the pool's part of a split reward): its total, components and errors."""
        self.components.update(result.components)
        self.component_errors.update(result.component_errors)
        self.seconds += result.seconds
        if result.error is not None:
            self.errors.append((result.error, result.message))
        if result.total is not None:  # with an error: the credit of the components that did score
            self.total, self.applicable = self.total + result.total, True

    def result(self) -> RewardResult:
        total = self.total if self.applicable else None
        if not self.errors:
            return RewardResult(total, self.components, seconds=self.seconds, skipped=total is None)
        return RewardResult(total, self.components, self.errors[0][0], "; ".join(m or "" for _, m in self.errors),
                            self.seconds, component_errors=self.component_errors)


class WeightedSum:
    __reward_batched__ = True

    def __init__(self, parts: list[tuple[str, LoadedReward, float]]):
        self.parts = parts

    def __call__(self, samples: list[Sample]) -> list[RewardResult]:
        rows = [Row() for _ in samples]
        for name, part, weight in self.parts:
            try:
                raw = part(samples)
            except Exception as error:  # this component's failure, on every sample of the call; the others score
                kind = "invalid" if isinstance(error, InvalidReward) else "exception"
                message = f"component {name!r} ({part.spec}): {describe(error, part.fn)}"
                for row in rows:
                    row.fail(name, kind, message)
                continue
            for row, value in zip(rows, raw):
                try:
                    total, extra = normalize(value, part.spec)
                except InvalidReward as error:
                    row.fail(name, "invalid", f"component {name!r}: {error}")
                    continue
                if total is not None:
                    row.add(name, weight, total, extra)
        return [row.result() for row in rows]


def combine(weights: Mapping, **options) -> LoadedReward:
    """A weighted sum of rewards; keys are specs (names, paths or functions), values their weights.

    >>> rows = combine({"format": 0.5, "repetition": 1.0}).fn([Sample(prompt="hi /no_think", completion="a a")])
    >>> rows[0].total, rows[0].components
    (0.5, {'format': 1.0, 'repetition': 0.0})
    """
    if options:
        raise RewardSpecError(f"a weighted combination takes no options (got {sorted(options)}); load "
                              f"parametrised components first and pass them as keys")
    if not weights:
        raise RewardSpecError("a weighted combination needs at least one {spec: weight} entry")
    parts, names = [], set()
    for spec, weight in weights.items():
        weight, part_options = weight_and_options(spec, weight)
        loaded = load_reward(spec, **part_options)
        name = loaded.name
        while name in names:  # two components with one name (e.g. two files' `f`): keep both visible
            name += "_"
        names.add(name)
        parts.append((name, loaded, weight))
    label = " + ".join(f"{w:g}*{n}" for n, _, w in parts)
    return LoadedReward(spec=label, name="combined", form="native_batched", fn=WeightedSum(parts))


def weight_and_options(spec, value) -> tuple[float, dict]:
    """A component's value: its weight, or `{"weight": w, "options": {...}}` for a parametrised component (a
    recipe's `reward.components` entry with options, such as a trained reward model's path)."""
    if isinstance(value, Mapping):
        unknown = set(value) - {"weight", "options"}
        if unknown:
            raise RewardSpecError(f"reward {spec!r}: unknown keys {sorted(unknown)}; give weight and options")
        weight, options = value.get("weight", 1.0), dict(value.get("options") or {})
    else:
        weight, options = value, {}
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise RewardSpecError(f"weight of reward {spec!r} must be a number, got {weight!r}")
    return float(weight), options

"""Weighted combination of rewards, every component logged under its own name.

``combine({"math": 1.0, "format": 0.5})`` is one batched reward whose value per sample is
``{"total": sum(w_i * r_i), "math": r_math, "format": r_format, ...}``; a component that itself returns a
dict is logged as ``name/key`` too. A component that is not applicable (None) adds nothing to the total; a
sample for which every component is None is not applicable. A component that raises fails the batch with
its name in the message (the worker then isolates the sample). A component with options is given as
``{"reward_model": {"weight": 0.5, "options": {"model": "runs/x/rm"}}}``. This module knows nothing about workers.
"""

from __future__ import annotations

from collections.abc import Mapping

from rewards.adapters import LoadedReward
from rewards.registry import RewardSpecError, load_reward
from rewards.result import InvalidReward, normalize
from rewards.sample import Sample


class WeightedSum:
    __reward_batched__ = True

    def __init__(self, parts: list[tuple[str, LoadedReward, float]]):
        self.parts = parts

    def __call__(self, samples: list[Sample]) -> list[dict | None]:
        rows: list[dict] = [{"total": 0.0} for _ in samples]
        applicable = [False] * len(samples)
        for name, part, weight in self.parts:
            try:
                raw = part(samples)
            except Exception as error:
                raise RuntimeError(f"component {name!r} ({part.spec}) raised {type(error).__name__}: "
                                   f"{error}") from error
            for i, value in enumerate(raw):
                try:
                    total, extra = normalize(value, part.spec)
                except InvalidReward as error:
                    raise InvalidReward(f"component {name!r}: {error}") from None
                if total is None:
                    continue
                applicable[i] = True
                rows[i][name] = total
                rows[i]["total"] += weight * total
                rows[i].update({f"{name}/{k}": v for k, v in extra.items()})
        return [row if ok else None for row, ok in zip(rows, applicable)]


def combine(weights: Mapping, **options) -> LoadedReward:
    """A weighted sum of rewards; keys are specs (names, paths or functions), values their weights.

    >>> rows = combine({"format": 0.5, "repetition": 1.0}).fn([Sample(prompt="hi /no_think", completion="a a")])
    >>> rows[0]["total"], rows[0]["format"], rows[0]["repetition"]
    (0.5, 1.0, 0.0)
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

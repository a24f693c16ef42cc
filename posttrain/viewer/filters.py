"""Which trace samples to show: one filter shared by the terminal view, the web API and the export.

The cheap conditions (step, group, mode, prompt, reward range, error) run on a `TraceIndex` without reading the
records; the text condition reads each remaining record. The page's offline mode (`static/index.html`,
`matchesFilter`) mirrors these semantics in JavaScript: keep the two in step.

Knows nothing about HTTP or the command line; both hand it plain strings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Iterator, Mapping

from posttrain.viewer.index import TraceIndex


@dataclass
class TraceFilter:
    stage: str | None = None
    step: int | None = None
    mode: str | None = None
    min_reward: float | None = None
    max_reward: float | None = None
    error: bool = False  # only samples whose reward failed
    text: str | None = None  # case-insensitive, in prompt, completion, reference answer or reward message
    prompt_id: str | None = None
    group: int | None = None

    @classmethod
    def from_mapping(cls, params: Mapping[str, object]) -> TraceFilter:
        """From URL query parameters or argparse values; empty strings mean "not set".

        >>> f = TraceFilter.from_mapping({"mode": "think", "min_reward": "0.5", "error": "1", "page": "2"})
        >>> (f.mode, f.min_reward, f.error, f.step)
        ('think', 0.5, True, None)
        """
        values = {}
        for f in fields(cls):
            raw = params.get(f.name)
            if isinstance(raw, list):
                raw = raw[-1] if raw else None
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, raw)
        return cls(**values)

    def positions(self, index: TraceIndex) -> Iterator[int]:
        """Index positions that pass every condition but the text one, in file order."""
        low = -math.inf if self.min_reward is None else self.min_reward
        high = math.inf if self.max_reward is None else self.max_reward
        bounded = self.min_reward is not None or self.max_reward is not None
        for i in range(len(index)):
            if self.step is not None and index.steps[i] != self.step:
                continue
            if self.group is not None and index.groups[i] != self.group:
                continue
            if self.mode is not None and index.modes[i] != self.mode:
                continue
            if self.prompt_id is not None and index.prompt_ids[i] != self.prompt_id:
                continue
            if self.error and not index.errors[i]:
                continue
            if bounded and not low <= index.rewards[i] <= high:  # NaN (no reward) fails both comparisons
                continue
            yield i

    def matches_text(self, record: dict) -> bool:
        if not self.text:
            return True
        from posttrain.viewer.records import prompt_text

        needle = self.text.lower()
        haystack = (prompt_text(record.get("prompt")), record.get("completion"), record.get("answer"),
                    record.get("reward_message"))
        return any(needle in str(h).lower() for h in haystack if h is not None)


def _convert(name: str, raw: object):
    try:
        if name in ("step", "group"):
            return int(raw)
        if name in ("min_reward", "max_reward"):
            return float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"filter {name}={raw!r}: expected a number") from None
    if name == "error":
        return raw if isinstance(raw, bool) else str(raw).lower() not in ("0", "false", "no", "off")
    return str(raw)

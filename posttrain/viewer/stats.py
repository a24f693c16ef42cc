"""Per-step aggregates of one `traces.jsonl`, for the run report: mean reward and completion length per mode,
the think-rate of auto_think rollouts, and reward errors by kind.

Streams the file a line at a time (a torn last line is skipped), so memory grows with steps x modes, not with
samples. A record the viewer would refuse (`records.trace_record`) is left out and counted in `skipped`. Knows
nothing about plotting.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from keye_protocol.chat import parse_response
from posttrain.viewer.records import BadRecord, trace_record

AUTO_MODE = "auto_think"


def stream_records(path: Path) -> Iterator[dict]:
    """Every intact JSON object line of a JSONL file, read one line at a time."""
    with open(path, "rb") as source:
        for line in source:
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):  # RecursionError: JSON nested past Python's recursion limit
                continue  # a torn last line (crash mid-write) or a damaged one
            if isinstance(record, dict):
                yield record


@dataclass
class _Mean:
    total: float = 0.0
    count: int = 0

    def add(self, value) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            self.total += value
            self.count += 1

    @property
    def value(self) -> float | None:
        return self.total / self.count if self.count else None


@dataclass
class TraceStats:
    reward: dict[str, dict[int, _Mean]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(_Mean)))
    length: dict[str, dict[int, _Mean]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(_Mean)))
    auto_reasoned: dict[int, _Mean] = field(default_factory=lambda: defaultdict(_Mean))
    errors: dict[str, dict[int, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    steps: set[int] = field(default_factory=set)
    skipped: int = 0  # records with fields of the wrong type, left out as the viewer leaves them out

    @classmethod
    def read(cls, path: Path) -> TraceStats:
        stats = cls()
        for record in stream_records(path):
            try:
                trace_record(record)
            except BadRecord:
                stats.skipped += 1
                continue
            stats.add(record)
        return stats

    def add(self, record: dict) -> None:
        step, mode = record.get("step"), record.get("mode") or "unknown"
        if not isinstance(step, int):
            return
        self.steps.add(step)
        self.reward[mode][step].add(record.get("reward"))
        self.length[mode][step].add(record.get("completion_tokens"))
        if record.get("reward_error"):
            self.errors[str(record["reward_error"])][step] += 1
        if mode == AUTO_MODE:
            self.auto_reasoned[step].add(float(parse_response(record.get("completion") or "").reasoned))

    @staticmethod
    def series(per_step: dict[int, _Mean]) -> tuple[list[int], list[float]]:
        points = sorted((s, m.value) for s, m in per_step.items() if m.value is not None)
        return [s for s, _ in points], [v for _, v in points]

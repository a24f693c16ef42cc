"""The mixer's arithmetic: exact sample counts per bucket (mode or video), per mode of video, per source.

Counts come from the largest-remainder method, so every count is within one sample of its exact share and
they add up to the total. Ties go to the bucket listed first, so the plan is deterministic. This module
knows nothing about tasks or teachers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cold_start_data.config import VIDEO, BuildConfig


@dataclass(frozen=True)
class Slot:
    bucket: str  # a mode name, or "video"
    mode: str  # the chat mode of the samples
    source: str
    count: int

    @property
    def scope(self) -> str:
        """The deduplication scope: one question may appear once per mode (video and image apart)."""
        return f"{self.bucket}/{self.mode}"


def allocate(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Split `total` in proportion to `weights`: floors, then the largest remainders get one more.

    >>> allocate(10, {"a": 0.485, "b": 0.338, "c": 0.029, "d": 0.147})
    {'a': 5, 'b': 3, 'c': 0, 'd': 2}
    >>> allocate(7, {"a": 1, "b": 1})
    {'a': 4, 'b': 3}
    """
    norm = sum(weights.values())
    exact = {k: total * w / norm for k, w in weights.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    order = sorted(exact, key=lambda k: -(exact[k] - counts[k]))  # stable: earlier keys win ties
    for k in order[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def bucket_shares(config: BuildConfig) -> dict[str, float]:
    """Each bucket's target share of the whole mixture."""
    total = sum(config.proportions.values())
    shares = {mode: (1 - config.video_share) * w / total for mode, w in config.proportions.items()}
    if config.video_share:
        shares[VIDEO] = config.video_share
    return shares


def bucket_counts(config: BuildConfig) -> dict[str, int]:
    return allocate(config.size, bucket_shares(config))


def plan(config: BuildConfig, taken: dict[str, int] | None = None) -> list[Slot]:
    """The synthetic slots to fill, in build order. Counts sum to `config.size` less what user rows already
    `taken` per bucket (user rows take the place of synthetic ones in their mode)."""
    slots, taken = [], taken or {}
    for bucket, count in bucket_counts(config).items():
        count -= min(count, taken.get(bucket, 0))
        modes = allocate(count, config.video_modes) if bucket == VIDEO else {bucket: count}
        for mode, mode_count in modes.items():
            for source, n in allocate(mode_count, config.sources[bucket]).items():
                if n:
                    slots.append(Slot(bucket, mode, source, n))
    return slots

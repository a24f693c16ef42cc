"""Duplicate and contamination checks on prompts: exact text, and near-duplicate images by pHash.

Two prompts are the same when their normalised text (mode suffix removed, whitespace collapsed, case folded)
is equal and their visual content is the same: no images on either side, or images (and video key frames)
whose pHashes are all within `max_distance` bits. The same question about a different image is a different
prompt. One `PromptIndex` serves both uses: the mixture's own duplicates (scoped by mode, so one question
may appear once per mode) and decontamination against evaluation prompts (no scope: any mode counts).
This module knows nothing about how prompts are generated.
"""

from __future__ import annotations

import re

import numpy as np

from keye_protocol.chat import strip_mode_suffix


def normalise_prompt(text: str) -> str:
    """
    >>> normalise_prompt("  What is 2 +  3?   /think")
    'what is 2 + 3?'
    """
    return re.sub(r"\s+", " ", strip_mode_suffix(text)).strip().casefold()


class PromptIndex:
    def __init__(self, max_distance: int = 4):
        self.max_distance = max_distance
        self._rows: dict[tuple[str, int], list[tuple[int, ...]]] = {}
        self._arrays: dict[tuple[str, int], np.ndarray] = {}

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._rows.values())

    @staticmethod
    def _key(text: str, hashes: tuple[int, ...], scope: str) -> tuple[str, int]:
        return f"{scope}\x00{normalise_prompt(text)}", len(hashes)

    def contains(self, text: str, hashes: tuple[int, ...] = (), scope: str = "") -> bool:
        key = self._key(text, hashes, scope)
        rows = self._rows.get(key)
        if not rows:
            return False
        if not hashes:
            return True
        if key not in self._arrays or len(self._arrays[key]) != len(rows):
            self._arrays[key] = np.array(rows, dtype=np.uint64)
        query = np.array(hashes, dtype=np.uint64)
        distances = np.bitwise_count(self._arrays[key] ^ query)  # [rows, images]
        return bool((distances.max(axis=1) <= self.max_distance).any())

    def add(self, text: str, hashes: tuple[int, ...] = (), scope: str = "") -> None:
        self._rows.setdefault(self._key(text, hashes, scope), []).append(tuple(hashes))

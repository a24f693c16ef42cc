"""A byte-offset index over one `traces.jsonl`, so a viewer can filter and page through a large file without
holding it in memory.

One pass reads each line once and keeps, per record, its offset and length plus the few fields filters need
(step, group, sample, mode, prompt id, reward, error) in compact arrays; a record is re-read from disk only when
shown. `refresh()` indexes what a live run appended since, and starts over when a resumed run truncated the file.
A last line without its newline that does not parse (a crash mid-write) is left out and reported as `torn`;
other unparsable lines are counted in `bad_lines`.

Knows nothing about what the records mean beyond those field names.
"""

from __future__ import annotations

import json
import math
import threading
from array import array
from pathlib import Path
from typing import Iterable, Iterator

NO_REWARD = math.nan  # reward missing (a failed or skipped reward)


class TraceIndex:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._reset()
        self.refresh()

    def _reset(self) -> None:
        self.offsets, self.lengths = array("q"), array("l")
        self.steps, self.groups, self.samples = array("l"), array("l"), array("l")
        self.rewards = array("d")
        self.errors = bytearray()
        self.modes: list[str] = []
        self.prompt_ids: list[str] = []
        self._strings: dict[str, str] = {}  # interned mode / prompt id strings
        self.scanned_to = 0  # bytes consumed (complete lines only)
        self.torn = False
        self.bad_lines = 0

    def __len__(self) -> int:
        return len(self.offsets)

    def refresh(self) -> None:
        """Index what was appended since the last call (or everything, if the file shrank)."""
        with self._lock:
            size = self.path.stat().st_size if self.path.exists() else 0
            if size < self.scanned_to:
                self._reset()
            if size > self.scanned_to:
                self._scan(size)

    def _scan(self, size: int) -> None:
        with open(self.path, "rb") as source:
            source.seek(self.scanned_to)
            offset = self.scanned_to
            self.torn = False
            for line in source:
                if offset + len(line) > size:
                    break
                complete = line.endswith(b"\n")
                if not self._add(offset, line, complete):
                    if not complete:  # torn tail: retried by the next refresh in case the writer is mid-line
                        self.torn = True
                        break
                    self.bad_lines += 1
                offset += len(line)
                self.scanned_to = offset

    def _add(self, offset: int, line: bytes, complete: bool) -> bool:
        if not line.strip():
            return complete
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False
        if not isinstance(record, dict):
            return False
        self.offsets.append(offset)
        self.lengths.append(len(line))
        self.steps.append(_int(record.get("step")))
        self.groups.append(_int(record.get("group")))
        self.samples.append(_int(record.get("sample_index")))
        self.rewards.append(_float(record.get("reward")))
        self.errors.append(1 if record.get("reward_error") else 0)
        self.modes.append(self._intern(record.get("mode")))
        self.prompt_ids.append(self._intern(record.get("prompt_id")))
        return True

    def _intern(self, value) -> str:
        text = "" if value is None else str(value)
        return self._strings.setdefault(text, text)

    def read(self, positions: Iterable[int]) -> Iterator[tuple[int, dict]]:
        """(position, record) for each index position, read from disk in the order given."""
        with open(self.path, "rb") as source:
            for i in positions:
                source.seek(self.offsets[i])
                yield i, json.loads(source.read(self.lengths[i]))

    def read_raw(self, position: int) -> bytes:
        with open(self.path, "rb") as source:
            source.seek(self.offsets[position])
            line = source.read(self.lengths[position])
        return line if line.endswith(b"\n") else line + b"\n"

    def step_range(self) -> tuple[int, int] | None:
        return (min(self.steps), max(self.steps)) if len(self) else None

    def distinct_modes(self) -> list[str]:
        return sorted(set(self.modes) - {""})


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a step of Infinity
        return -1


def _float(value) -> float:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return NO_REWARD
    return result if math.isfinite(result) else NO_REWARD

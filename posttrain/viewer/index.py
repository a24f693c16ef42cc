"""A byte-offset index over one `traces.jsonl`, so a viewer can filter and page through a large file without
holding it in memory.

One pass reads each line once and keeps, per record, its offset and length plus the few fields filters need
(step, group, sample, mode, prompt id, reward, error) in compact arrays; a record is re-read from disk only when
shown. `refresh()` indexes what a live run appended since, and starts over when a resumed run truncated the file.
A last line without its newline that does not parse (a crash mid-write) is left out and reported as `torn`.
Any other line a view could not show (broken JSON, wrong field types: see `records.load_record`, or longer than
`MAX_LINE_BYTES`, which is skipped without being read whole) is left out and counted in `bad_lines`, with the
number and reason of the first one in `first_bad`.

Knows nothing about what the records mean beyond those field names.
"""

from __future__ import annotations

import json
import math
import threading
from array import array
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from posttrain.viewer.records import BadRecord, TraceRecord, load_record

NO_REWARD = math.nan  # reward missing (a failed or skipped reward)
# a trace line is a few KB to a few hundred KB (a 50k-token completion, escaped); one past this is damage, and
# parsing it (x5-10 in memory) and shipping it per request is what made one 200 MB completion stall the viewer
MAX_LINE_BYTES = 16 * 2**20
_SKIP_CHUNK = 2**20  # bytes read at a time while skipping an over-long line


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
        self.scanned_size = 0  # the file's size at the last scan: a torn tail is retried only once it grew
        self.lines = 0  # complete lines consumed, so a skipped one can be named by its line number
        self.torn = False
        self.bad_lines = 0
        self.first_bad: tuple[int, str] | None = None  # (1-based line number, reason) of the first skipped line

    def __len__(self) -> int:
        return len(self.offsets)

    def refresh(self) -> None:
        """Index what was appended since the last call (or everything, if the file shrank)."""
        with self._lock:
            size = self.path.stat().st_size if self.path.exists() else 0
            if size < self.scanned_to:
                self._reset()
            if size > self.scanned_to and size != self.scanned_size:
                self._scan(size)
                self.scanned_size = size

    def _scan(self, size: int) -> None:
        with open(self.path, "rb") as source:
            source.seek(self.scanned_to)
            self.torn = False
            while self.scanned_to < size:
                line = source.readline(MAX_LINE_BYTES + 1)
                length, complete = len(line), line.endswith(b"\n")
                if length > MAX_LINE_BYTES and not complete:  # never held whole: skipped to its newline
                    skipped, complete = _skip_line(source)
                    length, line = length + skipped, None
                if self.scanned_to + length > size:
                    break  # appended after the stat: the next refresh reads it
                reason = self._add(self.scanned_to, line, length)
                if reason is not None:
                    if not complete:  # torn tail: retried by the next refresh in case the writer is mid-line
                        self.torn = True
                        break
                    self._skip(reason)
                self.lines += complete
                self.scanned_to += length

    def _skip(self, reason: str) -> None:
        self.bad_lines += 1
        if self.first_bad is None:
            self.first_bad = (self.lines + 1, reason)

    def _add(self, offset: int, line: bytes | None, length: int) -> str | None:
        """Index one line; the reason it cannot be shown, or None (a blank line is fine and not indexed)."""
        if line is None or length > MAX_LINE_BYTES:
            return f"longer than {MAX_LINE_BYTES:,} bytes ({length:,})"
        if not line.strip():
            return None if line.endswith(b"\n") else "an unfinished blank line"
        try:
            record = load_record(line)
        except BadRecord as error:
            return str(error)
        self._append(offset, length, record)
        return None

    def _append(self, offset: int, length: int, record: TraceRecord) -> None:
        self.offsets.append(offset)
        self.lengths.append(length)
        self.steps.append(-1 if record.step is None else record.step)
        self.groups.append(-1 if record.group is None else record.group)
        self.samples.append(-1 if record.sample_index is None else record.sample_index)
        self.rewards.append(_float(record.reward))
        self.errors.append(1 if record.reward_error else 0)
        self.modes.append(self._intern(record.mode))
        self.prompt_ids.append(self._intern(record.prompt_id))

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


def _skip_line(source: BinaryIO) -> tuple[int, bool]:
    """Read past the rest of an over-long line a chunk at a time: (bytes skipped, whether its newline came)."""
    skipped = 0
    while chunk := source.read(_SKIP_CHUNK):
        newline = chunk.find(b"\n")
        if newline >= 0:
            source.seek(newline + 1 - len(chunk), 1)
            return skipped + newline + 1, True
        skipped += len(chunk)
    return skipped, False


def _float(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else NO_REWARD

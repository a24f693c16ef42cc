"""Per-step JSONL logs (traces, metrics) that survive Ctrl-C and `kill -9` without duplicates or gaps.

Records are appended a step at a time and fsynced. A resumed stage continues from its last checkpoint at step
S, so it opens its logs with `resume_after=S`: records of later steps (written after that checkpoint, and about
to be produced again) are dropped, and a torn last line from a crash mid-write is discarded. Any other line that
is no record (JSON nested past the parser's limit, a 5,000-digit number, a bare list, a step that is no integer)
is discarded like a torn one, with a one-line warning, and the records around it are kept: one damaged line must
not stop a resume. Images of a trace are written as PNG files next to the log and referenced by relative path.

Knows nothing about what a step computes.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable

TRACE_FIELDS = ("run", "stage", "step", "prompt_id", "sample_index", "mode", "prompt", "completion",
                "finish_reason", "prompt_tokens", "completion_tokens", "reward", "reward_components",
                "reward_error", "advantage", "weight_version", "worker", "timings")


def sample_record(run: str, stage: str, group: int, row: dict, completion, result, **extra) -> dict[str, Any]:
    """One trace record: a prompt row's answer (`rollout.types.Completion`) and its reward (`RewardResult`)."""
    return {"run": run, "stage": stage, "prompt_id": row["id"], "sample_index": completion.sample_index,
            "group": group, "mode": row.get("mode"), "prompt": row.get("prompt", row.get("messages")),
            "answer": row.get("answer"), "completion": completion.text, "finish_reason": completion.finish_reason,
            "prompt_tokens": len(completion.prompt_ids), "completion_tokens": completion.num_tokens,
            "reward": result.total, "reward_components": result.components, "reward_error": result.error,
            "reward_message": result.message, "weight_version": completion.weight_version,
            "worker": completion.worker, "timings": completion.timings, "tool_calls": completion.tool_calls,
            **extra}


class StepLog:
    def __init__(self, path: str | Path, resume_after: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate(resume_after)
        self._file = open(self.path, "a", encoding="utf-8")

    def _truncate(self, resume_after: int | None) -> None:
        """Drop the records of steps after `resume_after` and every line that is no record (`parse_record`)."""
        if not self.path.exists():
            return
        kept, dropped, damaged, data = [], 0, [], self.path.read_bytes()
        # bytes, split on newline only: a line of bad UTF-8 is one damaged line, not a decode error for the file
        for number, line in enumerate(data.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                record = parse_record(line)
            except ValueError as error:  # a torn write from a crash, or a line damaged since
                damaged.append(f"line {number}: {error}")
                continue
            if resume_after is None or record.get("step", -1) <= resume_after:
                kept.append(line + b"\n")
            else:
                dropped += 1
        if damaged:
            print(f"warning: {self.path}: dropped {len(damaged)} line(s) that are no record (first: {damaged[0]}); "
                  f"{len(kept)} record(s) kept", file=sys.stderr, flush=True)
        if dropped or damaged or data[-1:] not in (b"", b"\n"):  # else the next record is appended to the last line
            temp = self.path.with_suffix(self.path.suffix + ".tmp")
            temp.write_bytes(b"".join(kept))
            os.replace(temp, self.path)

    def write_step(self, step: int, records: Iterable[dict[str, Any]]) -> None:
        # the caller's step wins over a record's own (a learner reports its update count as "step")
        lines = [json.dumps({**r, "step": step}, default=_jsonable) + "\n" for r in records]
        self._file.write("".join(lines))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read_log(path: str | Path) -> list[dict]:
    """All intact records: a torn or damaged line (`parse_record`) is skipped. A resumed stage opens its logs with
    `StepLog` first, which drops such lines and warns."""
    records = []
    if Path(path).exists():
        for line in Path(path).read_bytes().split(b"\n"):  # not splitlines: U+2028 in a completion
            try:
                records.append(parse_record(line))
            except ValueError:
                continue
    return records


def parse_record(line: bytes | str) -> dict:
    """One log line as a record: a JSON object whose `step`, if it has one, is an integer. Raises ValueError saying
    why it is none; json's own errors are not all ValueErrors (too deep a nesting is a RecursionError).

    >>> parse_record('{"step": 2, "reward": 1.0}')
    {'step': 2, 'reward': 1.0}
    >>> parse_record('{"step": "2"}')
    Traceback (most recent call last):
    ...
    ValueError: step "2" is not an integer
    """
    try:
        record = json.loads(line)
    except RecursionError:
        raise ValueError("JSON nested too deeply to parse") from None
    except ValueError as error:  # torn JSON, bad UTF-8, an integer of more than 4300 digits
        raise ValueError(f"not JSON ({str(error).split(';')[0]})") from None  # not "use sys.set_int_max_..."
    if not isinstance(record, dict):
        raise ValueError(f"a JSON {type(record).__name__}, not an object")
    step = record.get("step")
    if "step" in record and (not isinstance(step, int) or isinstance(step, bool)):
        raise ValueError(f"step {json.dumps(step)[:40]} is not an integer")
    return record


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)


class MetricsLog:
    """metrics.jsonl plus TensorBoard scalars (when the tensorboard package is installed)."""

    def __init__(self, stage_dir: Path, resume_after: int | None, tensorboard: bool = True):
        self.log = StepLog(stage_dir / "metrics.jsonl", resume_after)
        self.board = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.board = SummaryWriter(str(stage_dir / "tensorboard"))
            except ImportError:
                self.board = None

    def write(self, step: int, metrics: dict[str, float]) -> None:
        self.log.write_step(step, [metrics])
        if self.board is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.board.add_scalar(key, value, step)
            self.board.flush()

    def close(self) -> None:
        self.log.close()
        if self.board is not None:
            self.board.close()


def save_images(images: list, directory: Path, prefix: str) -> list[str]:
    """Write PIL images as PNGs; return paths relative to the directory's parent (the stage dir)."""
    paths = []
    for i, image in enumerate(images):
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{prefix}-{i}.png"
        if not path.exists():
            image.save(path)
        paths.append(str(path.relative_to(directory.parent)))
    return paths

"""A run directory as the viewers see it: its stages (`<nn>-<stage>/`), one lazily built `TraceIndex` per
stage's `traces.jsonl` (and per `eval_traces.jsonl`, the held-out answers, shown as stage `<nn>-<stage>:eval`),
and the queries the views ask (a filtered page, a group, one prompt across steps).

Indexes are refreshed on each query, so a viewer opened on a live run sees new steps. Knows nothing about how
results are displayed.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Iterator

from posttrain.viewer.filters import TraceFilter
from posttrain.viewer.index import TraceIndex

STAGE_FILES = ("traces.jsonl", "eval_traces.jsonl", "metrics.jsonl", "eval.jsonl", "done.json")
_STAGE_NAME = re.compile(r"^\d+-")


def resolve_run(run: str | Path) -> Path:
    """A run directory given as a path, or as a name under `runs/`."""
    path = Path(run)
    for candidate in (path, Path("runs") / path):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"run directory {run} not found (looked at {path} and runs/{path})")


def stage_dirs(run_dir: Path) -> list[Path]:
    """Stage directories (`<nn>-<stage>/`) in run order; a stage directory given directly is a run of one stage."""
    if any((run_dir / name).exists() for name in STAGE_FILES):
        return [run_dir]
    return sorted(p for p in run_dir.iterdir() if p.is_dir() and _STAGE_NAME.match(p.name))


def stage_note(index: TraceIndex) -> str | None:
    """What a view of this trace file leaves out, in words (None: nothing), shown by the page and `traces show`."""
    parts = ["last line truncated (crash mid-write?)"] if index.torn else []
    if index.bad_lines:
        line, reason = index.first_bad
        plural = "s" if index.bad_lines > 1 else ""
        parts.append(f"{index.bad_lines} unreadable line{plural} skipped (first: line {line}, {reason})")
    return "; ".join(parts) or None


class RunTraces:
    def __init__(self, run: str | Path):
        self.dir = resolve_run(run)
        self.trace_files = {f"{p.name}{suffix}": p / file for p in stage_dirs(self.dir)
                            for suffix, file in (("", "traces.jsonl"), (":eval", "eval_traces.jsonl"))
                            if (p / file).exists()}
        self.stage_paths = {name: path.parent for name, path in self.trace_files.items()}
        self._indexes: dict[str, TraceIndex] = {}
        self._lock = threading.Lock()  # the web server queries from several threads

    @property
    def name(self) -> str:
        return self.dir.name

    def index(self, stage: str) -> TraceIndex:
        if stage not in self.stage_paths:
            known = ", ".join(self.stage_paths) or "none"
            raise ValueError(f"stage {stage!r} has no traces in {self.dir} (stages with traces: {known})")
        with self._lock:
            if stage not in self._indexes:
                self._indexes[stage] = TraceIndex(self.trace_files[stage])
            else:
                self._indexes[stage].refresh()
            return self._indexes[stage]

    def overview(self) -> dict:
        stages = []
        for name in self.stage_paths:
            index = self.index(name)
            stages.append({"name": name, "samples": len(index), "steps": index.step_range(),
                           "modes": index.distinct_modes(), "errors": sum(index.errors),
                           "torn": index.torn, "bad_lines": index.bad_lines, "note": stage_note(index)})
        return {"run": self.name, "stages": stages}

    def stages(self, flt: TraceFilter) -> list[str]:
        # held-out answers (`<stage>:eval`) only when asked for: their steps would interleave with training's
        return [flt.stage] if flt.stage else [s for s in self.stage_paths if not s.endswith(":eval")]

    def notes(self, flt: TraceFilter) -> list[str]:
        """`stage: note` for each stage the filter reads whose file had lines left out."""
        notes = ((stage, stage_note(self.index(stage))) for stage in self.stages(flt))
        return [f"{stage}: {note}" for stage, note in notes if note]

    def matches(self, flt: TraceFilter) -> Iterator[tuple[str, int, dict | None]]:
        """(stage, position, record) in run order; the record is read only when the text filter needs it."""
        for stage in self.stages(flt):
            index = self.index(stage)
            positions = flt.positions(index)
            if not flt.text:
                yield from ((stage, i, None) for i in positions)
                continue
            for i, record in index.read(positions):
                if flt.matches_text(record):
                    yield stage, i, record

    def query(self, flt: TraceFilter, offset: int = 0, limit: int = 50) -> tuple[int, list[tuple[str, int, dict]]]:
        """(number of matches, the matching records in [offset, offset + limit))."""
        total, page = 0, []
        for stage, i, record in self.matches(flt):
            if offset <= total < offset + limit:
                page.append((stage, i, record))
            total += 1
        return total, [(stage, i, record or self.record(stage, i)) for stage, i, record in page]

    def record(self, stage: str, position: int) -> dict:
        index = self.index(stage)
        if not 0 <= position < len(index):
            raise ValueError(f"stage {stage} has no sample {position}")
        return next(index.read([position]))[1]

    def group(self, stage: str, step: int, group: int) -> list[tuple[str, int, dict]]:
        """The G samples drawn for one prompt at one step, by sample index."""
        _, rows = self.query(TraceFilter(stage=stage, step=step, group=group), limit=10_000)
        return sorted(rows, key=lambda row: row[2].get("sample_index") or 0)

    def prompt_history(self, prompt_id: str, stage: str | None = None, limit: int = 2000):
        """Every sample of one prompt, across steps (and stages unless one is given)."""
        return self.query(TraceFilter(stage=stage, prompt_id=prompt_id), limit=limit)

    def image_path(self, stage: str, relative: str) -> Path | None:
        """A trace image inside the stage directory; None for anything that would escape it."""
        root = self.stage_paths.get(stage)
        if root is None:
            return None
        root = root.resolve()
        path = (root / relative).resolve()
        return path if path.is_file() and path.is_relative_to(root) else None

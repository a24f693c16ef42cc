"""`posttrain traces export`: matching samples as one self-contained HTML page (to attach to an issue), or as
a dataset (the original JSONL lines, or Parquet).

The HTML page is the live viewer's page with the samples embedded as JSON and trace images inlined as data
URIs: one file, no external URL, opens offline. Parquet keeps scalar fields as columns, flattens reward
components to `reward_component.<name>` and stores other nested fields as JSON text (their shapes vary by
record). Knows nothing about the command line.
"""

from __future__ import annotations

import base64
import json
import mimetypes
from pathlib import Path

from posttrain.viewer import page
from posttrain.viewer.filters import TraceFilter
from posttrain.viewer.records import view_record
from posttrain.viewer.run import RunTraces

FORMATS = ("html", "jsonl", "parquet")
HTML_LIMIT = 2000  # an attachment, not an archive: more samples make a page browsers struggle with


def export(run: RunTraces, flt: TraceFilter, fmt: str, output: Path, limit: int | None = None) -> tuple[int, int]:
    """Write the matches; returns (written, matching)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "html":
        limit = HTML_LIMIT if limit is None else limit
    matches = list(_positions(run, flt))
    chosen = spread(matches, limit)
    output.parent.mkdir(parents=True, exist_ok=True)
    {"html": _html, "jsonl": _jsonl, "parquet": _parquet}[fmt](run, chosen, output, flt, len(matches))
    return len(chosen), len(matches)


def spread(matches: list, limit: int | None) -> list:
    """At most `limit` of the matches, evenly spaced over all of them in order, so a capped export of a 300-step run
    shows steps 0 to 299 rather than the first few.

    >>> spread(list(range(10)), 4)
    [0, 2, 5, 7]
    """
    if limit is None or len(matches) <= limit:
        return matches
    return [matches[k * len(matches) // limit] for k in range(limit)]


def _positions(run: RunTraces, flt: TraceFilter):
    for stage, i, _ in run.matches(flt):
        yield stage, i


def _records(run: RunTraces, chosen):
    for stage, i in chosen:
        yield stage, i, run.record(stage, i)


def _html(run: RunTraces, chosen, output: Path, flt: TraceFilter, matching: int) -> None:
    def inline_image(stage: str, relative: str) -> str:
        path = run.image_path(stage, relative)
        if path is None:
            return ""
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"

    samples = [view_record(record, stage, i, inline_image) for stage, i, record in _records(run, chosen)]
    overview = run.overview()
    counts = {s["stage"]: 0 for s in samples}
    for s in samples:
        counts[s["stage"]] += 1
    overview["stages"] = [{**st, "samples": counts[st["name"]]} for st in overview["stages"] if st["name"] in counts]
    spaced = ", evenly spaced over them" if len(samples) < matching else ""
    overview["note"] = f"exported {len(samples)} of {matching} matching samples{spaced}" + _describe(flt)
    html = page.render({"run": overview, "samples": samples}, title=f"traces · {run.name}")
    output.write_text(html, encoding="utf-8")


def _describe(flt: TraceFilter) -> str:
    conditions = [f"{k}={v}" for k, v in vars(flt).items() if v not in (None, False, "")]
    return f" ({', '.join(conditions)})" if conditions else ""


def _jsonl(run: RunTraces, chosen, output: Path, flt: TraceFilter, matching: int) -> None:
    with open(output, "wb") as sink:
        for stage, i in chosen:
            sink.write(run.index(stage).read_raw(i))


def _parquet(run: RunTraces, chosen, output: Path, flt: TraceFilter, matching: int) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("--format parquet needs pyarrow (pip install pyarrow)") from None
    rows = [flat_row(record) for _, _, record in _records(run, chosen)]
    columns = sorted({key for row in rows for key in row}, key=_column_order)
    table = pa.table({key: _uniform([row.get(key) for row in rows]) for key in columns})
    pq.write_table(table, output)


def flat_row(record: dict) -> dict:
    """A trace record as one flat table row.

    >>> flat_row({"step": 1, "reward_components": {"math": 1.0}, "timings": {"generate_s": 0.5}})
    {'step': 1, 'reward_component.math': 1.0, 'timings': '{"generate_s": 0.5}'}
    """
    row = {}
    for key, value in record.items():
        if key == "reward_components" and isinstance(value, dict):
            row.update({f"reward_component.{name}": _number(v) for name, v in value.items()})
        elif key in ("reward", "advantage"):
            row[key] = _number(value)  # a non-finite value was logged as a string
        elif isinstance(value, (dict, list)):
            row[key] = json.dumps(value, ensure_ascii=False)
        else:
            row[key] = value
    return row


def _uniform(values: list) -> list:
    """One Arrow type per column: a column whose values mix types is stored as text."""
    kinds = {float if isinstance(v, int) and not isinstance(v, bool) else type(v) for v in values if v is not None}
    return [None if v is None else str(v) for v in values] if len(kinds) > 1 else values


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _column_order(name: str) -> tuple[int, str]:
    known = ("run", "stage", "step", "prompt_id", "group", "sample_index", "mode", "reward")
    return (known.index(name), name) if name in known else (len(known), name)

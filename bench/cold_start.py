"""Cold-start build throughput, and where its time goes.

1. Per source: tasks generated per second (drawing, rendering).
2. Per stage on the same tasks: pHash (dedup/decontamination), verification (rewards' checkers, math-verify
   underneath), the agentic sandbox run (one subprocess per sample).
3. A whole build of `--size` samples (paper proportions, solver teacher): samples/s end to end.
Target: a 1000-sample mixture in under a minute on this 2-core machine (so that tiny recipes can rebuild it).

Usage: python -m bench.cold_start [--size 300 --tasks 200]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time

from cold_start_data.build import build
from cold_start_data.config import BuildConfig
from cold_start_data.formatting import format_solution
from cold_start_data.pipeline import task_hashes
from cold_start_data.sources import SOURCES
from cold_start_data.teachers.agentic import AgenticTeacher
from cold_start_data.verify import verify


def timed(fn, *args):
    """(fn(*args), seconds)."""
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def _verify_all(texts, tasks):
    return [verify(text, "think", task.kind, task.answer) for text, task in zip(texts, tasks)]


def stages(tasks_per_source: int) -> dict[str, float]:
    out = {}
    for name, make in SOURCES.items():
        rng = random.Random(0)
        tasks, seconds = timed(lambda m, r: [m(r) for _ in range(tasks_per_source)], make, rng)
        out[f"generate/{name}"] = len(tasks) / seconds
        out[f"phash/{name}"] = len(tasks) / timed(lambda ts: [task_hashes(t) for t in ts], tasks)[1]
        if name != "small_detail":
            texts = [format_solution("think", t.solution) for t in tasks]
            out[f"verify/{name}"] = len(tasks) / timed(_verify_all, texts, tasks)[1]
    agentic, rng = AgenticTeacher(), random.Random(1)
    detail = [SOURCES["small_detail"](rng) for _ in range(20)]
    out["sandbox/small_detail"] = len(detail) / timed(agentic.write, [(t, None, None) for t in detail])[1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--tasks", type=int, default=200, help="tasks per source for the stage rates")
    args = parser.parse_args()
    rates = stages(args.tasks)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        build(BuildConfig(size=args.size, seed=0), out)
        seconds = time.perf_counter() - start
    print(f"{'stage/source':32s} {'items/s':>10s}")
    for key, value in rates.items():
        print(f"{key:32s} {value:10.1f}")
    print(f"build of {args.size}: {seconds:.1f} s = {args.size / seconds:.1f} samples/s "
          f"(1000 samples ~ {1000 * seconds / args.size:.0f} s)")
    print(json.dumps({"bench": "cold_start", "size": args.size, "build_s": round(seconds, 2),
                      "samples_per_s": round(args.size / seconds, 1), **{k: round(v, 1) for k, v in rates.items()}}))


if __name__ == "__main__":
    main()

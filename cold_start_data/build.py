"""Build the cold-start mixture end to end: config -> held-out prompts -> user rows -> synthetic slots ->
dataset files + report.

1. Held-out evaluation prompts are drawn first (their own random streams) and indexed, with any external
   evaluation sets, for decontamination.
2. User rows take their place in their mode first (up to the mode's count); bad rows are reported, not fatal.
3. The plan's synthetic slots are filled exactly (`pipeline.Collector`).
4. Records are shuffled (seeded) and written as Parquet + JSONL with media files; the report follows.
Same config and seed, same bytes. This module knows nothing about the CLI.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any, Callable

from cold_start_data.config import BuildConfig
from cold_start_data.evalset import eval_index, eval_rows, held_out
from cold_start_data.judge import PassRateJudge, StepCountJudge
from cold_start_data.mixer import bucket_counts, plan
from cold_start_data.pipeline import Collector, Offer
from cold_start_data.report import write_report
from cold_start_data.teachers import AgenticTeacher, ModelTeacher, SolverTeacher
from cold_start_data.user_data import load_user_data
from cold_start_data.writer import MediaWriter, write_dataset, write_jsonl


def make_teachers(config: BuildConfig, run_tool: Callable | None = None, engine: Any = None):
    """(teacher, agentic teacher, judge) as the config asks; a model teacher samples with `engine` (the caller
    loads `teacher.model_dir`: this package knows nothing about models)."""
    t = config.teacher
    if t.kind == "model":
        if engine is None:
            raise ValueError(f"teacher.kind 'model' needs a rollout engine loaded from {t.model_dir} "
                             f"(posttrain.stages.cold_start.teacher_engine)")
        teacher = ModelTeacher(engine, samples=t.samples, temperature=t.temperature, max_tokens=t.max_tokens,
                               step_frequency=t.step_frequency, seed=config.seed, iou_threshold=config.iou_threshold)
    else:
        teacher = SolverTeacher(t.flaw_rate, config.seed, t.repeat_rate)
    if config.judge.kind == "pass_rate":
        if not isinstance(teacher, ModelTeacher):
            raise ValueError("judge.kind 'pass_rate' needs a model teacher (teacher.kind: model)")
        judge = PassRateJudge(teacher, config.judge.samples, config.judge.threshold)
    else:
        judge = StepCountJudge(config.judge.min_steps)
    return teacher, AgenticTeacher(run_tool), judge


def add_user_rows(config: BuildConfig, collector: Collector) -> dict[str, int]:
    """Offer the user's rows to their modes, in file order, up to each mode's count; returns counts taken."""
    quotas, taken = bucket_counts(config), {}
    pending: dict[str, list[Offer]] = {}
    for path in config.user_data:
        data = load_user_data(path, config.user_default_mode)
        collector.stats.user_errors += data.errors
        for row in data.tasks:
            pending.setdefault(row.mode.value, []).append(Offer(row.task, row.mode, row.mode.value, row.response,
                                                                row.where))
    for bucket, offers in pending.items():
        quota, kept, i = quotas.get(bucket, 0), 0, 0
        while i < len(offers) and kept < quota:
            n = min(config.teacher.batch_size, quota - kept)
            kept += collector.offer(offers[i:i + n])
            i += n
        for offer in offers[i:]:
            collector.stats.reject(bucket, offer.task.source, f"quota full: {bucket} holds {quota} samples in "
                                   f"this mixture", offer.where)
        taken[bucket] = kept
    return taken


def build(config: BuildConfig, out: str | Path, progress: Callable[[int], None] | None = None,
          run_tool: Callable | None = None, engine: Any = None, overwrite: bool = False) -> dict:
    """Build the mixture into `out`; returns the report (also written to out/report/)."""
    out = Path(out)
    if (out / "data").exists():
        if not overwrite:
            raise FileExistsError(f"{out} already holds a mixture; choose another directory or overwrite it")
        for name in ("data", "media", "report"):
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    teacher, agentic, judge = make_teachers(config, run_tool, engine)
    held = held_out(config)
    collector = Collector(teacher, agentic, judge, eval_index(config, held), config.phash_distance,
                          config.iou_threshold, progress)
    taken = add_user_rows(config, collector)
    for slot in plan(config, taken):
        collector.fill(slot, config.seed, config.teacher.batch_size, config.max_attempts)
    records = list(collector.records)
    random.Random(f"{config.seed}:shuffle").shuffle(records)  # SFT reads a mixed stream, not mode blocks
    write_dataset(records, out)
    write_jsonl(eval_rows(held, MediaWriter(out)), out / "eval.jsonl")
    (out / "build_config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n")
    return write_report(config, records, collector.stats, out)


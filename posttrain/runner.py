"""The stage runner: stages in order, each in `runs/<name>/<nn>-<stage>/`, resumable after any stop.

A stage is done when its `done.json` exists (written last, atomically); a finished stage is skipped on the next
run and its model directory feeds the next stage. A stage that builds data (`<stage>/data/done`) feeds the stages
after it too, file by file: each reads the newest copy of the file it needs (`StageContext.data_file`). A stage
that was stopped resumes from its own latest checkpoint (the stage's code does that). Either way the recipe must still say what the stage was run with
(`stage_settings`): an edited recipe stops the run rather than mixing results. Each stage runs the function
`posttrain.stages.registry.STAGES` names for its kind, given a `StageContext` (`posttrain.stages.context`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from posttrain.actor_logs import ActorLogWatch
from posttrain.cluster import check_fits, ray_cluster
from posttrain.data import prepare_data, prepare_model
from posttrain.placement import reserved
from posttrain.recipe import Recipe
from posttrain.stage_settings import check_resume, record
from posttrain.stages.common import latest_checkpoint
from posttrain.stages.context import StageContext
from posttrain.stages.registry import STAGES


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM while a stage ran; the message says where the run stopped and how to resume it."""


def run_recipe(recipe: Recipe, console: Console | None = None) -> list[dict[str, Any]]:
    """Run (or resume) every stage; returns each stage's summary."""
    console = console or Console()
    check_fits(recipe)
    check_resume(recipe)
    recipe.run_dir.mkdir(parents=True, exist_ok=True)
    (recipe.run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    model = prepare_model(recipe, console)
    data_dirs = [prepare_data(recipe, console)]
    summaries = []
    actor_logs = ActorLogWatch(recipe.run_dir)
    with ray_cluster(recipe), reserved(recipe) as placement:  # the bundles stay reserved for the whole run
        for index, (stage, stage_dir) in enumerate(zip(recipe.stages, recipe.stage_dirs())):
            start = getattr(stage, "start_from", None)  # the name of an earlier stage whose model it starts from
            ctx = StageContext(recipe, index, stage, stage_dir, recipe.stage_model(start) if start else model,
                               data_dirs[0], console, placement, tuple(data_dirs[1:]))
            done = stage_dir / "done.json"
            if done.exists():
                console.print(f"[dim]{ctx.label}: done earlier, skipped[/]")
                summary = json.loads(done.read_text())
            else:
                record(recipe, index, stage_dir)
                console.rule(f"{ctx.label}")
                if start:
                    console.print(f"{ctx.label}: starts from stage {start}'s model ({ctx.model_in})", soft_wrap=True)
                try:
                    summary = run_stage(ctx, console)
                finally:  # a failed stage's warnings may say why
                    actor_logs.announce(console, ctx.label)
                write_json_atomic(done, summary)
            if (ctx.model_out / "config.json").exists():
                model = ctx.model_out
            if (stage_dir / "data" / "done").exists():  # a stage that builds data feeds the stages after it
                data_dirs.insert(0, stage_dir / "data")
            summaries.append(summary)
    return summaries


def run_stage(ctx: StageContext, console: Console) -> dict[str, Any]:
    """One stage, saying when it resumes from a checkpoint, and where it stopped when interrupted."""
    checkpoint = latest_checkpoint(ctx)
    if checkpoint is not None:
        console.print(f"{ctx.label}: resuming from {checkpoint}", soft_wrap=True)  # a path is not wrapped
    start = time.perf_counter()
    try:
        summary = STAGES[ctx.stage.kind](ctx)
    except KeyboardInterrupt as stop:
        checkpoint = latest_checkpoint(ctx)
        saved = f"its last checkpoint is {checkpoint}" if checkpoint else "no checkpoint was saved yet"
        raise RunInterrupted(f"{ctx.label} stopped ({str(stop) or 'Ctrl-C'}); {saved}. Run the same command to "
                             f"resume") from None
    return {"stage": ctx.label, **summary, "seconds": round(time.perf_counter() - start, 1)}


def write_json_atomic(path: Path, data: Any) -> None:
    temp = path.with_suffix(path.suffix + ".tmp")
    temp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temp, path)

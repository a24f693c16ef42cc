"""The settings a stage's output depends on, recorded when it starts, so that a run resumed with an edited recipe
stops instead of silently reusing (or continuing) a stage trained with other settings.

A stage depends on the seed, the model and data sections, its own entry in `stages`, and the sections its kind
reads (an sft stage the learner, an eval stage the rollout and reward sections...). Knobs that only place or
size the work (worker counts, CPU shares, threads, batch sizes for generation) and bounds that only stop a run
(`reward.max_error_rate`) are left out: changing them is a fine reason to resume. Earlier stages are checked
first, so a change upstream stops the run at the first stage it affects. The settings bind once the stage has
produced something (`produced`: a checkpoint, a logged step, done.json, built data): a stage that stopped before
that has nothing to reuse, so its rerun takes the recipe as it now is (a fixed warmup, say) and records it again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from posttrain.recipe import Recipe

SECTIONS_READ = {"sft": ("learner",), "rl": ("learner", "rollout", "reward"),
                 "distill": ("learner", "rollout", "reward"), "eval": ("rollout", "reward"),
                 "cold_start_build": (), "rejection_sample": ("rollout", "reward"), "preference": ("learner",)}
PLACEMENT_KEYS = {"num_workers", "cpus_per_worker", "gpus_per_worker", "threads", "max_batch_size", "timeout_s",
                  "checkpoint_every"}
# How fast, not what: every engine samples from the same model and sampling settings, and packed or
# shared-prefix micro-batches give the logits of unpacked ones. A run started when the defaults were
# `transformers` / `bucket` resumes.
SPEED_KEYS = {"engine", "micro_batching", "shared_prefix"}
# Bounds that stop a run but never change what it trains (`reward.max_error_rate`): raising one to resume a
# stopped run is what its error message suggests, so it is no change.
GUARD_KEYS = {"max_error_rate", "error_window"}
FILE = "settings.json"
TEMP = "settings.tmp"  # `_write` writes FILE through it


def stage_settings(recipe: Recipe, index: int) -> dict[str, Any]:
    """The learner section as the stage resolves it (top level + the stage's overrides), so moving a key
    between the two is not a change."""
    dump = recipe.model_dump(mode="json")
    left_out = PLACEMENT_KEYS | SPEED_KEYS | GUARD_KEYS
    stage = {k: v for k, v in dump["stages"][index].items() if k != "learner" and k not in left_out}
    settings = {"seed": dump["seed"], "model": dump["model"], "data": dump["data"], "stage": stage}
    for section in SECTIONS_READ.get(stage["kind"], ("learner", "rollout", "reward")):
        values = (recipe.stage_learner(recipe.stages[index]).model_dump(mode="json") if section == "learner"
                  else dump[section])
        settings[section] = {k: v for k, v in values.items() if k not in left_out}
    return settings


def check_resume(recipe: Recipe) -> None:
    """Before anything runs: every stage already started must still match the recipe, and no stage after the
    first one that will run may have started (it was built on that stage's earlier output)."""
    dirs = recipe.stage_dirs()
    for index, stage_dir in enumerate(dirs):
        recorded = _read(stage_dir / FILE) if produced(stage_dir) else None
        if recorded is not None:
            changes = differences(recorded, stage_settings(recipe, index))
            if changes:
                shown = "\n".join(f"  {key}: {old} -> {new}" for key, old, new in changes[:10])
                raise StageSettingsChanged(
                    f"{stage_dir} was run with other settings than the recipe now has:\n{shown}\nTo keep that "
                    f"run, start a new one under another name (override `name=...`); to redo this stage, delete "
                    f"{stage_dir} and the stage directories after it.")
    pending = [i for i, d in enumerate(dirs) if not (d / "done.json").exists()]
    later = dirs[pending[0] + 1:] if pending else []
    started = [d for d in later if produced(d)]
    if started:
        raise StageSettingsChanged(
            f"{dirs[pending[0]].name} will run, but {', '.join(d.name for d in started)} started on an earlier "
            f"output of it; delete {', '.join(str(d) for d in started)} as well (or use a new run name) so that no "
            f"stage reads a result it did not produce.")


def record(recipe: Recipe, index: int, stage_dir: Path) -> None:
    """Written when a stage starts, and kept once it has produced something (`produced`): it says what that
    was produced with. A stage stopped before (a crash while its learners started) is recorded again, so the
    rerun of a fixed recipe is not refused for a stage that never trained."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    path = stage_dir / FILE
    if _read(path) is None or not produced(stage_dir):  # absent, torn by a crash while written, or nothing made
        _write(path, stage_settings(recipe, index))


def produced(stage_dir: Path) -> bool:
    """Whether a stage wrote anything a resume or a later stage could use: done.json, a checkpoint, a logged
    step, built data, a model. That is any non-empty file but its settings and TensorBoard's event files (they
    get a header when the log opens, before the first step); a log opened empty before a crash is nothing."""
    for file in stage_dir.rglob("*"):
        if file.name in (FILE, TEMP) or "tensorboard" in file.relative_to(stage_dir).parts:
            continue
        if file.is_file() and file.stat().st_size > 0:
            return True
    return False


def record_choice(stage_dir: Path, key: str, value: Any, why: str) -> None:
    """What an `auto` setting resolved to when the stage started (the engine it runs, say), kept under "auto" in
    the stage's settings.json for anyone auditing the run. A resume decides again and overwrites it; `differences`
    ignores the key (the recipe's own settings have no "auto"), so the choice never blocks a resume. Stages run
    outside `posttrain run` (tests) have no settings.json to add to."""
    path = stage_dir / FILE
    recorded = _read(path)
    if recorded is None:
        return
    recorded.setdefault("auto", {})[key] = {"chosen": value, "why": why}
    _write(path, recorded)


def _write(path: Path, settings: dict) -> None:
    """Whole or not at all: a crash mid-write leaves the old file (or none), never a torn one."""
    temp = path.with_name(TEMP)
    temp.write_text(json.dumps(settings, indent=2) + "\n")
    os.replace(temp, path)


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) for every leaf that differs. Keys on one side only are settings that a newer or
    older version of the toolkit has (a field added with its default), not edits, and are left out.

    >>> differences({"stage": {"epochs": 6, "lr": 1}}, {"stage": {"epochs": 10, "lr": 1, "new_field": 0}})
    [('stage.epochs', 6, 10)]
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) & set(new), key=str):
            out += differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


class StageSettingsChanged(ValueError):
    pass

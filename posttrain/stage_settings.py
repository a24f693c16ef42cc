"""The settings a stage's output depends on, recorded when it starts, so that a run resumed with an edited recipe
stops instead of silently reusing (or continuing) a stage trained with other settings.

A stage depends on the seed, the model and data sections, its own entry in `stages`, and the sections its kind
reads (an sft stage the learner, an eval stage the rollout and reward sections...). Knobs that only place or
size the work (worker counts, CPU shares, threads, batch sizes for generation) are left out: changing them is
a fine reason to resume. Earlier stages are checked first, so a change upstream stops the run at the first
stage it affects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from posttrain.recipe import Recipe

SECTIONS_READ = {"sft": ("learner",), "rl": ("learner", "rollout", "reward"), "eval": ("rollout", "reward"),
                 "cold_start_build": ()}
PLACEMENT_KEYS = {"num_workers", "cpus_per_worker", "threads", "max_batch_size", "timeout_s"}
FILE = "settings.json"


def stage_settings(recipe: Recipe, index: int) -> dict[str, Any]:
    dump = recipe.model_dump(mode="json")
    stage = dump["stages"][index]
    settings = {"seed": dump["seed"], "model": dump["model"], "data": dump["data"], "stage": stage}
    for section in SECTIONS_READ.get(stage["kind"], ("learner", "rollout", "reward")):
        settings[section] = {k: v for k, v in dump[section].items() if k not in PLACEMENT_KEYS}
    return settings


def check_resume(recipe: Recipe) -> None:
    """Before anything runs: every stage already started must still match the recipe, and no finished stage
    may come after the first one that will run (it was built on that stage's earlier output)."""
    dirs = recipe.stage_dirs()
    for index, stage_dir in enumerate(dirs):
        if (stage_dir / FILE).exists():
            changes = differences(json.loads((stage_dir / FILE).read_text()), stage_settings(recipe, index))
            if changes:
                shown = "\n".join(f"  {key}: {old} -> {new}" for key, old, new in changes[:10])
                raise StageSettingsChanged(
                    f"{stage_dir} was run with other settings than the recipe now has:\n{shown}\nTo keep that "
                    f"run, start a new one under another name (override `name=...`); to redo this stage, delete "
                    f"{stage_dir} and the stage directories after it.")
    pending = [i for i, d in enumerate(dirs) if not (d / "done.json").exists()]
    stale = [d for d in dirs[pending[0] + 1:] if (d / "done.json").exists()] if pending else []
    if stale:
        raise StageSettingsChanged(
            f"{dirs[pending[0]].name} will run, but {', '.join(d.name for d in stale)} finished on an earlier "
            f"output of it; delete {', '.join(str(d) for d in stale)} as well (or use a new run name) so that no "
            f"stage reads a result it did not produce.")


def record(recipe: Recipe, index: int, stage_dir: Path) -> None:
    """Written when a stage first starts (kept on resume: it says what the stage was started with)."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    if not (stage_dir / FILE).exists():
        (stage_dir / FILE).write_text(json.dumps(stage_settings(recipe, index), indent=2) + "\n")


def differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) for every leaf that differs.

    >>> differences({"stage": {"epochs": 6, "lr": 1}}, {"stage": {"epochs": 10, "lr": 1}})
    [('stage.epochs', 6, 10)]
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


class StageSettingsChanged(ValueError):
    pass

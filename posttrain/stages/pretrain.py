"""Keye-VL pre-training, stages 1-3, and the data they read (`pretrain_data`).

All three train the causal-LM loss on the assistant targets of the pre-training shards; they differ in what
trains and on what (KEYE.md, "Pre-training"):
- `align` (stage 1): vision tower, decoder and lm_head frozen, only the projector `mlp_AR` trains;
- `pretrain` (stage 2): every parameter trains, on the multi-task mixture;
- `anneal` (stage 3): every parameter trains, on a curated mixture, with a decaying (cosine) LR; `start_from`
  lets several anneals start from one stage-2 model, for `merge` to average.
A stage's `learner` section overrides these defaults. Each step draws `batch_size` rows, tasks with probability
proportional to their mixture weight and rows uniformly within a task, from an RNG seeded by (recipe seed,
stage index, step): a resumed stage replays the same batches. Every stage evaluates its model per task on the
held-out shards (`posttrain.pretrain_eval`) before and after, and prints which module groups trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rich.table import Table

from posttrain.pretrain_eval import evaluate_tasks
from posttrain.sft_data import encode_sft_row, sft_batch
from posttrain.stages.context import StageContext
from posttrain.stages.sft import train_in_batches
from pretrain_data.build import build_pretrain_data, read_task_rows
from rollout.encoding import PromptEncoder

KIND_DEFAULTS = {"align": {"freeze": ["visual", "model", "lm_head"]}, "pretrain": {}, "anneal": {"schedule": "cosine"}}
GROUPS = ("visual", "mlp_AR", "model", "lm_head")


def run_pretrain_data(ctx: StageContext) -> dict:
    stage = ctx.stage
    sizes = {task: (rows, stage.eval_rows) for task, rows in stage.train_rows.items()}
    report = build_pretrain_data(ctx.dir / "data", sizes, seed=ctx.recipe.seed + stage.seed,
                                 user_shards=stage.user_shards, mismatched_captions=stage.mismatched_captions,
                                 console=ctx.console)
    kept = {task: counts["kept"] for task, counts in report["per_task"].items()}
    removed = sum(c["duplicate"] + c["contaminated"] for c in report["per_task"].values())
    return {"kept": kept, "headline": f"{sum(kept.values())} training rows in {len(kept)} tasks "
                                      f"({removed} removed by hygiene)"}


def mixture_order(sizes: list[int], weights: list[float], steps: int, batch_size: int,
                  seed: list[int]) -> list[np.ndarray]:
    """Row indices (into the tasks' rows laid end to end) for every step.

    >>> order = mixture_order([2, 3], [0.0, 1.0], steps=4, batch_size=8, seed=[0])
    >>> all(2 <= i < 5 for step in order for i in step)  # only the second task's rows
    True
    >>> [s.tolist() for s in order] == [s.tolist() for s in mixture_order([2, 3], [0.0, 1.0], 4, 8, [0])]
    True
    """
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    p = np.asarray(weights, dtype=float) / sum(weights)
    order = []
    for step in range(steps):
        rng = np.random.default_rng([*seed, step])
        tasks = rng.choice(len(sizes), size=batch_size, p=p)
        order.append(np.array([offsets[t] + rng.integers(sizes[t]) for t in tasks]))
    return order


def stage_model(ctx: StageContext, name: str, key: str) -> Path:
    earlier = {s.name: d for s, d in zip(ctx.recipe.stages[:ctx.index], ctx.recipe.stage_dirs())}
    if name not in earlier:
        raise ValueError(f"stage {ctx.label}: {key} names {name!r}, which is not an earlier stage's name (earlier "
                         f"named stages: {sorted(n for n in earlier if n)})")
    model = earlier[name] / "model"
    if not (model / "config.json").exists():
        raise FileNotFoundError(f"stage {ctx.label}: {key} {name!r} has no model at {model} (did it run?)")
    return model


def run_pretraining(ctx: StageContext) -> dict:
    stage = ctx.stage
    model_in = ctx.model_in  # the previous stage's, or `start_from`'s (the runner resolves it)
    rows = read_task_rows(ctx.data_dir, "train", list(stage.mixture))
    empty = [task for task in stage.mixture if not rows[task]]
    if empty:
        raise ValueError(f"stage {ctx.label}: the mixture's tasks {empty} have no training rows in {ctx.data_dir}; "
                         f"give the pretrain_data stage rows for them or leave them out of the mixture")
    flat = [row for task in stage.mixture for row in rows[task]]
    order = mixture_order([len(rows[t]) for t in stage.mixture], list(stage.mixture.values()), stage.steps,
                          stage.batch_size, [ctx.recipe.seed, ctx.index])
    encoder = PromptEncoder.from_model_dir(model_in)
    overrides = {k: v for k, v in KIND_DEFAULTS[stage.kind].items() if k not in stage.learner}
    held_out = held_out_rows(ctx)
    before = cached_evaluation(model_in) or evaluate_tasks(model_in, held_out)
    summary = train_in_batches(ctx, len(flat), lambda idx: sft_batch(
        [encode_sft_row(flat[i], encoder, flat[i].get("id", "")) for i in idx], encoder.pad_id),
        order=order, model=str(model_in), **overrides)
    after = evaluate_tasks(ctx.model_out, held_out)
    trained = changed_groups(model_in, ctx.model_out)
    report(ctx, before, after, trained)
    return {**summary, "trained_groups": trained, "eval": {t: s.summary() for t, s in after.items()},
            "headline": "; ".join(s.describe() for s in after.values())}


def held_out_rows(ctx: StageContext) -> dict[str, list[dict]]:
    limit = getattr(ctx.stage, "eval_rows", None)
    return {task: rows[:limit] for task, rows in read_task_rows(ctx.data_dir, "eval").items()}


def cached_evaluation(model_dir: Path):
    """A stage's own model was evaluated when the stage ended: reuse that instead of evaluating again."""
    from posttrain.pretrain_eval import TaskScore

    path = model_dir.parent / "eval.json"
    if model_dir.name != "model" or not path.exists():
        return None
    after = json.loads(path.read_text())["after"]
    return {t: TaskScore(t, s["n"], s["loss"], s["correct"]) for t, s in after.items()}


def changed_groups(before: Path, after: Path) -> dict[str, dict]:
    """Per module group: parameter count and whether any of its tensors changed (frozen groups must not)."""
    from safetensors.torch import load_file

    old, new = load_file(str(before / "model.safetensors")), load_file(str(after / "model.safetensors"))
    out = {}
    for group in GROUPS:
        names = [n for n in new if n.split(".")[0] == group and "packing_position" not in n]
        out[group] = {"parameters": sum(new[n].numel() for n in names),
                      "changed": any(not new[n].equal(old[n]) for n in names)}
    return out


def report(ctx: StageContext, before: dict, after: dict, trained: dict) -> None:
    (ctx.dir / "eval.json").write_text(json.dumps(
        {"before": {t: s.summary() for t, s in before.items()},
         "after": {t: s.summary() for t, s in after.items()}, "trained_groups": trained}, indent=2) + "\n")
    groups = Table(title=f"{ctx.label}: parameters by module group")
    for column in ("group", "parameters", "trained"):
        groups.add_column(column)
    for group, info in trained.items():
        groups.add_row(group, f"{info['parameters']:,}", "yes" if info["changed"] else "frozen")
    ctx.console.print(groups)
    ctx.console.print(evaluation_table(f"{ctx.label}: held-out evaluation", {"before": before, "after": after}))


def evaluation_table(title: str, columns: dict[str, dict]) -> Table:
    table = Table(title=title)
    table.add_column("task")
    for label in columns:
        table.add_column(label)
    tasks = sorted({t for scores in columns.values() for t in scores})
    for task in tasks:
        table.add_row(task, *[scores[task].describe().removeprefix(task + " ") if task in scores else "-"
                              for scores in columns.values()])
    return table

"""The `merge` stage: average earlier stages' models (`posttrain.merging`) into a complete model directory,
then evaluate it per task beside each parent's own evaluation (the merged model should be at least as good as
the mean of its parents)."""

from __future__ import annotations

import json
import shutil

from safetensors.torch import save_file

from posttrain.merging import merge_weights
from posttrain.pretrain_eval import evaluate_tasks
from posttrain.stages.context import StageContext
from posttrain.stages.pretrain import cached_evaluation, evaluation_table, held_out_rows, stage_model


def run_merge(ctx: StageContext) -> dict:
    stage = ctx.stage
    parents = [stage_model(ctx, name, "models") for name in stage.models]
    merged = merge_weights(parents, stage.weights, stage.group_weights)
    temp = ctx.model_out.with_name("model.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    shutil.copytree(parents[0], temp, ignore=shutil.ignore_patterns("*.safetensors", "*.safetensors.index.json"))
    save_file(merged, str(temp / "model.safetensors"), metadata={"format": "pt"})
    shutil.rmtree(ctx.model_out, ignore_errors=True)
    temp.rename(ctx.model_out)
    held_out = held_out_rows(ctx)
    after = evaluate_tasks(ctx.model_out, held_out)
    columns = {name: cached_evaluation(p) or evaluate_tasks(p, held_out) for name, p in zip(stage.models, parents)}
    ctx.console.print(evaluation_table(f"{ctx.label}: merged vs parents", {**columns, "merged": after}))
    comparison = compare_with_parents(after, columns)
    (ctx.dir / "eval.json").write_text(json.dumps({"after": {t: s.summary() for t, s in after.items()},
                                                   "parents_mean": comparison}, indent=2) + "\n")
    return {"parents": stage.models, "eval": {t: s.summary() for t, s in after.items()},
            "versus_parents_mean": comparison,
            "headline": "; ".join(s.describe() for s in after.values())}


def compare_with_parents(merged: dict, parents: dict[str, dict]) -> dict[str, dict]:
    """Per task: the merged model's accuracy (or loss, for captions) against the mean of its parents'."""
    out = {}
    for task, score in merged.items():
        scores = [p[task] for p in parents.values() if task in p]
        if score.accuracy is not None:
            mean = sum(s.accuracy for s in scores) / len(scores)
            out[task] = {"merged_accuracy": score.accuracy, "parents_mean_accuracy": mean,
                         "at_least_mean": score.accuracy >= mean}
        else:
            mean = sum(s.loss for s in scores) / len(scores)
            out[task] = {"merged_loss": score.loss, "parents_mean_loss": mean, "at_most_mean": score.loss <= mean}
    return out

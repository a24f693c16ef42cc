"""Pre-training stage 0 (`kind: siglip`): Keye's vision tower continues training with the SigLIP sigmoid loss
against a text tower, on the caption shard of the data directory (a `pretrain_data` stage writes it).

Trains `visual.*` (native resolution, interpolated positions, 2-D RoPE, images packed block-diagonally), the
pooling head, the text tower and t', b on `cluster.num_learners` ranks; the loss sees every rank's captions as
negatives. Evaluated before and after by zero-shot image-to-text retrieval: each held-out image picks the
highest-scoring caption among all N held-out captions; top-1 accuracy with a 95% Wilson interval, against
chance (1/N when the captions are distinct). Outputs: `<stage>/model` (the starting Keye directory with the
trained `visual.*`, every other tensor bit-identical) and `<stage>/siglip` (towers + tokenizer, read by
`keye_vl.text_tower.ImageTextScorer`). Checkpoints every `checkpoint_every` steps hold the data position and
the "before" evaluation, so a resumed stage reports the same comparison.

Departure from the paper: stage 0 here starts the text tower from random weights (no public SigLIP text tower
matches Keye's tokenizer), so its first steps teach the text side as much as they adapt the vision side.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass

import torch

from posttrain.evaluation import wilson_interval
from posttrain.stages.common import _actor_options, latest_checkpoint, learner_config, publish_model, \
    save_checkpoint, stage_progress
from posttrain.stages.context import StageContext
from posttrain.stages.sft import step_order
from posttrain.traces import MetricsLog, StepLog


@dataclass
class Retrieval:
    """Zero-shot image-to-text retrieval among the held-out captions."""

    correct: int
    total: int
    chance: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def summary(self) -> dict:
        return {**asdict(self), "accuracy": self.accuracy, "interval": list(wilson_interval(self.correct, self.total))}

    def describe(self) -> str:
        low, high = wilson_interval(self.correct, self.total)
        return (f"image->text top-1 {100 * self.accuracy:.1f}% [{100 * low:.1f}, {100 * high:.1f}] "
                f"(n={self.total}, chance {100 * self.chance:.1f}%)")


def retrieval(logits: torch.Tensor, captions: list[str]) -> Retrieval:
    """logits: [N, N], row i image i, column j caption j. A pick counts as right when its text equals image i's
    caption (two held-out scenes can share a caption); chance is then the mean share of such captions."""
    picks = logits.argmax(dim=1).tolist()
    correct = sum(captions[j] == captions[i] for i, j in enumerate(picks))
    n = len(captions)
    chance = sum(captions.count(c) for c in captions) / (n * n) if n else 0.0
    return Retrieval(correct, n, chance)


def caption_pairs(ctx: StageContext, split: str):
    """(image paths, captions) of the caption shard; one image per row."""
    from posttrain.learners.siglip_learner import PairBatch
    from pretrain_data.build import read_task_rows
    from pretrain_data.shards import image_paths

    path = ctx.data_dir / f"caption.{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{ctx.label}: {path} not found; a siglip stage trains on the caption shard: put a "
                                f"`kind: pretrain_data` stage with caption rows before it")
    rows = read_task_rows(ctx.data_dir, split, ["caption"])["caption"]
    images = [image_paths(row) for row in rows]
    bad = [row["id"] for row, paths in zip(rows, images) if len(paths) != 1]
    if bad:
        raise ValueError(f"{path}: rows {bad[:5]} carry {len(images[0])} images; SigLIP pairs one image with "
                         f"one caption")
    return PairBatch([paths[0] for paths in images], [row["answer"] for row in rows])


def check_stage(ctx: StageContext, n_train: int) -> None:
    stage, learners = ctx.stage, ctx.recipe.cluster.num_learners
    where = f"stages[{ctx.index}] ({ctx.label})"
    if stage.batch_size % learners:
        raise ValueError(f"{where}: batch_size {stage.batch_size} must be a multiple of cluster.num_learners "
                         f"({learners}) so every rank holds as many pairs")
    if stage.batch_size > n_train:
        raise ValueError(f"{where}: batch_size {stage.batch_size} exceeds the {n_train} training captions")
    if ctx.recipe.learner.zero_stage == 3:
        raise ValueError(f"{where}: ZeRO-3 is not supported by the siglip stage (its retrieval evaluation runs "
                         f"ranks on uneven slices); the towers fit with learner.zero_stage 0-2")


def start_group(ctx: StageContext):
    from posttrain.learners.siglip_learner import SiglipGroup

    stage, cluster = ctx.stage, ctx.recipe.cluster
    config = learner_config(ctx, lr=stage.lr, total_steps=stage.steps)
    options = _actor_options(ctx, "learner") or \
        [{"num_cpus": cluster.cpus_per_learner, "num_gpus": cluster.gpus_per_learner}] * cluster.num_learners
    return SiglipGroup(config, stage.text_tower, options, cluster.learner_threads)


def evaluate(ctx: StageContext, group, held_out, log: StepLog, step: int, label: str) -> Retrieval:
    result = retrieval(group.retrieval_logits(held_out), held_out.captions)
    log.write_step(step, [{"label": label, **result.summary()}])
    ctx.console.print(f"[bold]retrieval {label}[/]: {result.describe()}")
    return result


def run_siglip(ctx: StageContext) -> dict:
    stage = ctx.stage
    train, held_out = caption_pairs(ctx, "train"), caption_pairs(ctx, "eval")
    check_stage(ctx, len(train.images))
    order = step_order(len(train.images), stage.batch_size, stage.steps, ctx.recipe.seed)
    group = start_group(ctx)
    try:
        checkpoint = latest_checkpoint(ctx)
        state = group.load(str(checkpoint)) if checkpoint else {"step": 0}
        start = state["step"]
        # keep the "before" record of an earlier attempt; an "after" one is written again
        log = StepLog(ctx.dir / "eval.jsonl", resume_after=min(start, stage.steps - 1) if checkpoint else -1)
        metrics_log = MetricsLog(ctx.dir, resume_after=start - 1, tensorboard=ctx.recipe.trace.tensorboard)
        before = Retrieval(**state["before"]) if "before" in state else \
            evaluate(ctx, group, held_out, log, 0, "before")
        losses = train_steps(ctx, group, train, order, start, metrics_log, asdict(before))
        final = save_checkpoint(ctx, group, stage.steps, extra={"before": asdict(before)})
        after = evaluate(ctx, group, held_out, log, stage.steps, "after")
        publish(ctx, final)
        metrics_log.close()
        log.close()
    finally:
        group.shutdown()
    last = losses[-10:]
    return {"steps": stage.steps, "final_loss": last[-1] if last else None,
            "retrieval": {"before": before.summary(), "after": after.summary()},
            "headline": f"{before.describe()} -> {after.describe()}"}


def train_steps(ctx: StageContext, group, train, order, start: int, metrics_log: MetricsLog, before: dict) -> list:
    from posttrain.learners.siglip_learner import PairBatch

    stage, losses = ctx.stage, []
    with stage_progress(ctx, stage.steps, start) as (progress, task):
        for step in range(start, stage.steps):
            rows = order[step]
            metrics = group.train_step(PairBatch([train.images[i] for i in rows], [train.captions[i] for i in rows]))
            metrics_log.write(step, metrics)
            losses.append(metrics["loss"])
            progress.update(task, advance=1, metrics=f"loss {metrics['loss']:.3f} t {metrics['temperature']:.1f} "
                                                     f"b {metrics['bias']:.1f}")
            if (step + 1) % stage.checkpoint_every == 0 and step + 1 < stage.steps:
                save_checkpoint(ctx, group, step + 1, extra={"before": before})
    return losses


def publish(ctx: StageContext, checkpoint) -> None:
    """`<stage>/model` (the Keye directory) and `<stage>/siglip` (the towers), from the final checkpoint."""
    publish_model(ctx, checkpoint)
    towers = ctx.dir / "siglip"
    shutil.rmtree(towers, ignore_errors=True)
    (ctx.model_out / "siglip").rename(towers)

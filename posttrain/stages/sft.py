"""Supervised fine-tuning stage: chat rows -> loss on the assistant tokens, through the learner group.

Reads `<data>/sft.jsonl`, shuffles per epoch with the recipe seed, checkpoints every `checkpoint_every` steps
and resumes from the latest checkpoint (the data position is part of it), then publishes `<stage>/model`.
"""

from __future__ import annotations

import math

import numpy as np

from posttrain.runner import StageContext, stage_kind
from posttrain.sft_data import encode_sft_row, read_jsonl, sft_batch
from posttrain.stages.common import (latest_checkpoint, learner_config, publish_model, save_checkpoint,
                                     stage_progress, start_learners)
from posttrain.traces import MetricsLog
from rollout.encoding import PromptEncoder


def load_examples(ctx: StageContext, encoder: PromptEncoder):
    path = ctx.data_dir / "sft.jsonl"
    rows = read_jsonl(path, required=("messages",))
    return [encode_sft_row(row, encoder, f"{path}:{i + 1}") for i, row in enumerate(rows)]


def step_order(n: int, batch_size: int, steps: int, seed: int) -> list[np.ndarray]:
    """Row indices of every step: a fresh permutation per epoch, so resuming at step s replays exactly."""
    per_epoch = max(1, n // batch_size)
    batches = []
    for epoch in range(math.ceil(steps / per_epoch)):
        order = np.random.default_rng(seed + epoch).permutation(n)
        batches += [order[i * batch_size:(i + 1) * batch_size] for i in range(per_epoch)]
    return batches[:steps]


@stage_kind("sft")
def run_sft(ctx: StageContext) -> dict:
    encoder = PromptEncoder.from_model_dir(ctx.model_in)
    examples = load_examples(ctx, encoder)
    summary = train_in_batches(ctx, len(examples), lambda rows: sft_batch([examples[i] for i in rows], encoder.pad_id))
    return {**summary, "examples": len(examples)}


def train_in_batches(ctx: StageContext, n: int, batch_of, order: list[np.ndarray] | None = None,
                     **config_overrides) -> dict:
    """`epochs` over n items in shuffled batches of `batch_size` (`batch_of(indices) -> TrainBatch`), or the
    given `order` (one index array per step), with checkpoints and resume; publishes `<stage>/model`. Shared by
    the supervised stage kinds (sft, preference, the pre-training stages)."""
    stage = ctx.stage
    if order is None:
        steps = max(1, round(stage.epochs * max(1, n // stage.batch_size)))
        order = step_order(n, stage.batch_size, steps, ctx.recipe.seed)
    steps = len(order)
    config = learner_config(ctx, total_steps=steps, **config_overrides)
    group = start_learners(ctx, config)
    try:
        checkpoint = latest_checkpoint(ctx)
        start = group.load(str(checkpoint))["step"] if checkpoint else 0
        metrics_log = MetricsLog(ctx.dir, resume_after=start - 1, tensorboard=ctx.recipe.trace.tensorboard)
        losses = []
        with stage_progress(ctx, steps, start) as (progress, task):
            for step in range(start, steps):
                metrics = group.train_step(batch_of(order[step]))
                metrics_log.write(step, metrics)
                losses.append(metrics.get("loss", float("nan")))
                progress.update(task, advance=1, metrics=f"loss {losses[-1]:.3f}")
                if (step + 1) % stage.checkpoint_every == 0 and step + 1 < steps:
                    save_checkpoint(ctx, group, step + 1)
        final = save_checkpoint(ctx, group, steps)
        publish_model(ctx, final)
        metrics_log.close()
    finally:
        group.shutdown()
    last = [x for x in losses[-10:] if x == x]
    headline = f"loss {sum(last) / len(last):.3f}" if last else "resumed at the end"
    return {"steps": steps, "final_loss": last[-1] if last else None, "headline": headline}

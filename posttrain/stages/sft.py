"""Supervised fine-tuning stage: chat rows -> loss on the assistant tokens, through the learner group.

Reads `<data>/sft.jsonl`, shuffles per epoch with the recipe seed, checkpoints every `checkpoint_every` steps
and resumes from the latest checkpoint (the data position is part of it), then publishes `<stage>/model`.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from posttrain.data_files import read_jsonl
from posttrain.recipe import supervised_steps
from posttrain.sft_data import encode_sft_row, sft_batch
from posttrain.stages.common import (latest_checkpoint, learner_config, publish_model, save_checkpoint,
                                     stage_progress, start_learners)
from posttrain.stages.context import StageContext
from posttrain.traces import MetricsLog
from rollout.encoding import PromptEncoder


def load_examples(ctx: StageContext, encoder: PromptEncoder):
    path = ctx.data_file("sft.jsonl")
    rows = read_jsonl(path, required=("messages",))
    return [encode_sft_row(row, encoder, f"{path}:{i + 1}") for i, row in enumerate(rows)]


def step_order(n: int, batch_size: int, steps: int, seed: int, lengths: list[int] | None = None,
               megabatch: int = 16) -> list[np.ndarray]:
    """Row indices of every step: a fresh permutation per epoch, so resuming at step s replays exactly.

    With `lengths` (`group_by_length`, as Hugging Face's LengthGroupedSampler), each run of `megabatch` batches
    of the permutation is sorted by length before it is cut into batches, and the batches are shuffled: rows of
    like length share a batch, so a 400-token agentic answer no longer pads 31 short rows to its length.
    """
    per_epoch = max(1, n // batch_size)
    batches = []
    for epoch in range(math.ceil(steps / per_epoch)):
        rng = np.random.default_rng(seed + epoch)
        order = rng.permutation(n)
        if lengths is None:
            batches += [order[i * batch_size:(i + 1) * batch_size] for i in range(per_epoch)]
            continue
        order, size, grouped = order[:per_epoch * batch_size], megabatch * batch_size, []
        for chunk in (order[i:i + size] for i in range(0, len(order), size)):
            chunk = chunk[np.argsort([-lengths[k] for k in chunk], kind="stable")]
            grouped += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        batches += [grouped[k] for k in rng.permutation(len(grouped))]
    return batches[:steps]


def run_sft(ctx: StageContext) -> dict:
    encoder = PromptEncoder.from_model_dir(ctx.model_in)
    examples, stage = load_examples(ctx, encoder), ctx.stage
    order = None
    if stage.group_by_length:
        steps = supervised_steps(len(examples), stage.epochs, stage.batch_size)
        order = step_order(len(examples), stage.batch_size, steps, ctx.recipe.seed, [len(e) for e in examples])

    def batch_of(rows):
        return sft_batch([examples[i] for i in rows], encoder.pad_id)

    summary = train_in_batches(ctx, len(examples), batch_of, order)
    return {**summary, "examples": len(examples)}


def order_digest(order: list[np.ndarray]) -> str:
    """Fingerprint of every step's rows: a resumed stage must replay exactly the batches it was checkpointed on."""
    digest = hashlib.sha256()
    for indices in order:
        digest.update(np.asarray(indices, dtype=np.int64).tobytes() + b"|")
    return digest.hexdigest()[:16]


def resume_step(checkpoint, saved: dict, data_state: dict) -> int:
    """The step to resume at; refuses a checkpoint whose data order is not this run's (the recipe's data, mixture,
    batch size, steps or seed changed since), since resuming it would silently train on other batches."""
    for key, value in data_state.items():
        if key in saved and saved[key] != value:
            raise ValueError(f"{checkpoint}: saved with {key} {saved[key]!r}, but this run's is {value!r}: the "
                             f"stage's data, mixture, batch_size, steps or seed changed since the checkpoint. "
                             f"Restore the recipe, or delete {checkpoint.parent} to start the stage afresh")
    return saved["step"]


def train_in_batches(ctx: StageContext, n: int, batch_of, order: list[np.ndarray] | None = None,
                     publish_to=None, **config_overrides) -> dict:
    """`epochs` over n items in shuffled batches of `batch_size` (`batch_of(indices) -> TrainBatch`), or the
    given `order` (one index array per step), with checkpoints and resume; publishes `<stage>/model` (or
    `publish_to`). Shared by the supervised stage kinds (sft, preference, reward_model, pre-training)."""
    stage = ctx.stage
    if order is None:
        steps = supervised_steps(n, stage.epochs, stage.batch_size)
        order = step_order(n, stage.batch_size, steps, ctx.recipe.seed)
    steps = len(order)
    config = learner_config(ctx, total_steps=steps, **config_overrides)
    group = start_learners(ctx, config)
    try:
        data_state = {"order_digest": order_digest(order), "items": n}
        checkpoint = latest_checkpoint(ctx)
        start = resume_step(checkpoint, group.load(str(checkpoint)), data_state) if checkpoint else 0
        metrics_log = MetricsLog(ctx.dir, resume_after=start - 1, tensorboard=ctx.recipe.trace.tensorboard)
        losses = []
        with stage_progress(ctx, steps, start) as (progress, task):
            for step in range(start, steps):
                metrics = group.train_step(batch_of(order[step]))
                metrics_log.write(step, metrics)
                losses.append(metrics.get("loss", float("nan")))
                progress.update(task, advance=1, metrics=f"loss {losses[-1]:.3f}")
                if (step + 1) % stage.checkpoint_every == 0 and step + 1 < steps:
                    save_checkpoint(ctx, group, step + 1, extra=data_state)
        final = save_checkpoint(ctx, group, steps, extra=data_state)
        publish_model(ctx, final, publish_to)
        metrics_log.close()
    finally:
        group.shutdown()
    last = [x for x in losses[-10:] if x == x]
    headline = f"loss {sum(last) / len(last):.3f}" if last else "resumed at the end"
    return {"steps": steps, "final_loss": last[-1] if last else None, "headline": headline}

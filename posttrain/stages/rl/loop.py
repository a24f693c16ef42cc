"""The RL stage's loop (GRPO family, mixed modes) on the Ray actor system.

One step, in order (each phase timed as `timing/<phase>_s`):
  1. sample prompts      - P rows from the prompt stream; their modes mix in one batch
  2. generate            - G samples per prompt on the rollout workers, with the current weights
  3. score               - rewards on the reward workers; failures are recorded per sample
  4. advantages          - the curriculum learns the groups' pass rates; advantages are group-normalised over
                           each group's scored samples (a skipped sample is no sibling; a group with fewer than
                           two scored carries no loss); with dynamic sampling, such groups and zero-variance
                           ones are dropped and refilled from the stream (DAPO): an `AdvantageResult`
  5. train               - one learner step (loss from the learner config: grpo / gspo / ...)
  6. sync weights        - learner -> rollout workers, with a version (`weight_sync.py`: object store,
                           shared memory or a broadcast group, by `rollout.weight_sync`)
  7. log                 - a trace record per sample, metrics per step
With `pipeline: one_step_off_policy` step k+1's prompts are drawn and generated (with the weights of step k)
while the learner trains on step k: each sample is one weight version stale (its trace says which), the ratio
is taken against the sampler's logprobs as always, and `timing/generate_wait_s` is the generation the training
did not hide. A run resumed from a checkpoint generates its first step with the checkpoint's weights.
Reward health is checked after every step (`rewards.health`): a reward component failing on more than
`reward.max_error_rate` of the samples over `reward.error_window` steps stops the run with its first error.
Held-out evaluation (greedy, per mode) runs before the first step, every `eval_every` steps and at the end.
Optional (Keye-VL-1.5): pass-rate filtering skips prompts already solved; progressive hints help prompts that
always fail (`curriculum.py`).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from posttrain.losses import group_advantages
from posttrain.prompts import PromptSampler, load_prompts, request_of, sample_of
from posttrain.stages.common import (latest_checkpoint, learner_config, publish_model, rollout_group,
                                     save_checkpoint, stage_progress, start_learners, training_reward_pool)
from posttrain.stages.context import StageContext
from posttrain.stages.evaluate import Evaluator
from posttrain.stages.rl.batch import rl_batch
from posttrain.stages.rl.curriculum import Curriculum
from posttrain.stages.rl.groups import Groups, is_scored
from posttrain.stages.rl.weight_sync import open_weight_sync
from posttrain.traces import MetricsLog, StepLog, sample_record, save_images
from rewards.health import RewardHealth
from rewards.result import RewardResult
from rollout.encoding import PromptEncoder
from rollout.group import PendingGeneration
from rollout.types import Completion


@contextmanager
def timed(timings: dict, phase: str):
    """Add the block's seconds to `timing/<phase>_s`, less what phases timed inside it recorded (a refill inside
    `advantages` counts once, as `refill`), so the phases add up to the step's time."""
    start, inner = time.perf_counter(), _timed_total(timings)
    yield
    inner = _timed_total(timings) - inner
    key = f"timing/{phase}_s"
    timings[key] = timings.get(key, 0.0) + time.perf_counter() - start - inner


def _timed_total(timings: dict) -> float:
    return sum(v for k, v in timings.items() if k.startswith("timing/"))


@dataclass
class Submitted:
    """A step's prompts and their generation, started (`pending.result()` waits for the completions). Pipelined,
    the next step's is kept in `RlLoop.upcoming` while the learner trains."""

    step: int
    rows: list[dict]
    pending: PendingGeneration


@dataclass
class AdvantageResult:
    """What the advantages phase hands to train and log: the kept groups, in order (P rows, G completions and
    results per row, contiguous), each sample's advantage, and the phase's metrics."""

    rows: list[dict]
    completions: list[Completion]  # [len(rows) * G]
    results: list[RewardResult]  # [len(rows) * G]
    advantages: torch.Tensor  # [len(rows) * G]; 0 for a sample that is not scored
    stats: dict[str, float]


class RlLoop:
    def __init__(self, ctx: StageContext):
        self.ctx, self.stage, recipe = ctx, ctx.stage, ctx.recipe
        self.sampler = PromptSampler(load_prompts(ctx.data_file("prompts.jsonl"), "p"), recipe.seed)
        self.encoder = PromptEncoder.from_model_dir(ctx.model_in)
        self.sampling = recipe.rollout.sampling.model_copy(update={"n": self.stage.group_size})
        config = learner_config(ctx, temperature=self.sampling.logprob_temperature, total_steps=self.stage.steps)
        self.learners = start_learners(ctx, config)
        self.shared_prefix = config.shared_prefix  # the batch then says which rows share a prompt
        stage = self.stage
        self.curriculum = Curriculum(stage.pass_rate_filter, stage.hints, stage.max_hint_level)
        checkpoint = latest_checkpoint(ctx)
        state = self.learners.load(str(checkpoint)) if checkpoint else {"step": 0}
        self.start = state["step"]
        self.curriculum.load_state_dict(state.get("curriculum", {}))
        self.rollout = rollout_group(ctx)
        self.weights = open_weight_sync(recipe.rollout, self.learners, self.rollout,
                                        lambda line: ctx.console.print(f"[dim]{ctx.label}: {line}[/]"))
        self.rewards = training_reward_pool(recipe)
        self.health = RewardHealth(recipe.reward.max_error_rate, recipe.reward.error_window)
        # evaluations up to the checkpoint's step stay ("after", logged at the last step, always runs again); a
        # fresh start runs "before" again, so keeps none
        resume_after = min(self.start, self.stage.steps - 1) if self.start else -1
        self.evaluator = Evaluator(ctx, self.rollout, resume_after=resume_after)
        self.traces = StepLog(ctx.dir / "traces.jsonl", resume_after=self.start - 1)
        self.metrics = MetricsLog(ctx.dir, self.start - 1, recipe.trace.tensorboard)
        self.upcoming: Submitted | None = None  # pipelined: the next step's prompts, generating

    # ------------------------------------------------------------------------------------------ the loop
    def run(self) -> dict:
        self.sync_weights(self.start)
        # a resumed stage keeps the "before" its first process logged, so its summary still compares
        before = self.evaluator.run(0, "before").summary if self.start == 0 else self.evaluator.recorded("before")
        with stage_progress(self.ctx, self.stage.steps, self.start) as (progress, task):
            for step in range(self.start, self.stage.steps):
                metrics = self.step(step)
                progress.update(task, advance=1, metrics=_headline(metrics))
                done = step + 1
                if self.stage.eval_every and done % self.stage.eval_every == 0 and done < self.stage.steps:
                    self.metrics.write(step, self.evaluator.run(done, f"step {done}").metrics)
                if done % self.stage.checkpoint_every == 0 and done < self.stage.steps:
                    self.checkpoint(done)
        after = self.evaluator.run(self.stage.steps, "after")
        publish_model(self.ctx, self.checkpoint(self.stage.steps))
        headline = "; ".join(part for part in (after.compare(before), self.health.headline()) if part)
        return {"eval_before": before, "eval_after": after.summary,
                "reward_errors": self.health.summary(), "headline": headline}

    def checkpoint(self, done: int):
        return save_checkpoint(self.ctx, self.learners, done, extra={"curriculum": self.curriculum.state_dict()})

    def step(self, step: int) -> dict:
        timings: dict[str, float] = {}
        upcoming, self.upcoming = self.upcoming, None
        submitted = upcoming if upcoming and upcoming.step == step else self.submit(step, timings)
        with timed(timings, "generate"):
            completions = submitted.pending.result()
        with timed(timings, "reward"):
            scored = self.score(submitted.rows, completions)
        with timed(timings, "advantages"):
            kept = self.advantages(step, submitted.rows, completions, scored, timings)
        if self.stage.pipeline == "one_step_off_policy" and step + 1 < self.stage.steps:
            self.upcoming = self.submit(step + 1, timings)  # generates while the learner trains
        with timed(timings, "train"), self.engines_asleep():
            train_metrics = self.train(kept.rows, kept.completions, kept.results, kept.advantages)
        with timed(timings, "sync"):  # the learner's half, while the workers may still generate
            weights = self.publish_weights(step + 1)
        if self.upcoming:
            with timed(timings, "generate_wait"):  # the weights may change only once that generation is done
                self.upcoming.pending.result()
        with timed(timings, "sync"):
            self.deliver_weights(step + 1, weights)
        with timed(timings, "log"):
            metrics = {**kept.stats, **train_metrics, **timings,
                       **self.rollout_metrics(step, kept.completions, kept.results), **self.health.end_step()}
            self.log(step, kept.rows, kept.completions, kept.results, kept.advantages)
            self.metrics.write(step, metrics)
        self.health.check(last_step=step + 1 == self.stage.steps)  # after logging: the step's metrics are written
        return metrics

    # ------------------------------------------------------------------------------------------ phases
    def draw(self, step: int, offset: int = 0) -> list[dict]:
        """P prompts the curriculum wants (solved ones skipped when filtering), with their hints applied."""
        count, rows = self.stage.prompts_per_step, []
        for attempt in range(4):
            drawn = self.sampler.draw(step, count, offset=offset + attempt * count)
            rows += [r for r in drawn if self.curriculum.wants(r)][: count - len(rows)]
            if len(rows) == count:
                break
        return [self.curriculum.prepare(r) for r in rows or drawn]

    def submit(self, step: int, timings: dict) -> Submitted:
        """Draw step's prompts and start their generation."""
        with timed(timings, "sample"):
            rows = self.draw(step)
        return Submitted(step, rows, self.rollout.submit([request_of(r) for r in rows], self.seeded_sampling(step)))

    def generate(self, rows: list[dict], step: int, refill: int = 0):
        """G completions per row, grouped contiguously."""
        return self.rollout.generate([request_of(r) for r in rows], self.seeded_sampling(step, refill))

    def seeded_sampling(self, step: int, refill: int = 0):
        """Sampling seeded by the recipe's seed (or rollout.sampling.seed), the step and the refill, so a rerun
        (or a resumed run) samples what it did."""
        base = self.sampling.seed if self.sampling.seed is not None else self.ctx.recipe.seed
        return self.sampling.model_copy(update={"seed": (base * 1_000_003 + step * 1_009 + refill) % 2**31})

    def score(self, rows, completions):
        g = self.stage.group_size
        samples = [sample_of(rows[i // g], c, i // g, g) for i, c in enumerate(completions)]
        scored = self.rewards.score(samples)
        self.health.record(scored.results)
        return scored

    def advantages(self, step, rows, completions, scored, timings) -> AdvantageResult:
        """The curriculum learns the step's pass rates; the groups without a baseline (with dynamic sampling, also
        those whose rewards are all equal) are dropped and the step refills; the kept groups get their advantages."""
        stats = {f"reward_pool/{k}": v for k, v in scored.metrics.items() if isinstance(v, (int, float))}
        stats.update(self.update_curriculum(rows, scored.results))
        groups = Groups(self.stage.group_size, drop_constant=self.stage.dynamic_sampling)
        groups.add(rows, completions, scored.results)
        refills = self.refill(step, groups, timings)
        rows, completions, results = groups.first(self.stage.prompts_per_step)
        stats.update({"rl/groups_kept": len(rows), "rl/refills": refills, **groups.metrics()})
        return AdvantageResult(rows, completions, results, self.advantages_of(results), stats)

    def update_curriculum(self, rows, results) -> dict[str, float]:
        """Each prompt's pass rate over its group (before any group is dropped), for what the next draws skip or
        hint; the curriculum's metrics."""
        g = self.stage.group_size
        for k, row in enumerate(rows):
            self.curriculum.update(row, [r.total for r in results[k * g:(k + 1) * g]])
        return self.curriculum.metrics()

    def refill(self, step: int, groups: Groups, timings: dict) -> int:
        """Dynamic sampling: while fewer than P groups are kept, draw more prompts from further along the stream,
        generate and score them (a refill's seed differs from the step's), up to `max_refills` times. Returns how
        many refills ran."""
        wanted, refills = self.stage.prompts_per_step, 0
        while self.stage.dynamic_sampling and len(groups.rows) < wanted and refills < self.stage.max_refills:
            refills += 1
            extra = self.draw(step, offset=4 * refills * wanted)
            with timed(timings, "refill"):
                extra_completions = self.generate(extra, step, refill=refills)
                groups.add(extra, extra_completions, self.score(extra, extra_completions).results)
        return refills

    def advantages_of(self, results) -> torch.Tensor:
        """Each sample's advantage within its group of G, over the group's scored samples only."""
        totals = torch.tensor([r.total if is_scored(r) else 0.0 for r in results])
        if not len(totals):
            return totals
        scored = torch.tensor([is_scored(r) for r in results], dtype=torch.bool)
        return group_advantages(totals, self.stage.group_size, scale_std=self.stage.std_normalize, scored=scored)

    def train(self, rows, completions, results, advantages) -> dict:
        if not completions:
            return {"rl/skipped_step": 1.0}
        batch = self.train_batch(rows, completions, results, advantages)
        return {f"train/{k}": v for k, v in self.learners.train_step(batch).items()}

    def train_batch(self, rows, completions, results, advantages):
        """The learner's batch of one step (a subclass adds fields, e.g. distill's teacher log-probs)."""
        g = self.stage.group_size
        batch = rl_batch([rows[i // g] for i in range(len(completions))], completions, advantages, self.encoder,
                         group_size=g if self.shared_prefix else None)
        skipped = torch.tensor([self.carries_no_loss(r) for r in results])
        if skipped.any():
            batch = batch.with_fields(loss_mask=batch.loss_mask * (~skipped).long()[:, None])
        return batch

    def carries_no_loss(self, result) -> bool:
        """on_error: skip (or not applicable): a sample without a reward has no advantage to train on."""
        return not is_scored(result)

    @contextmanager
    def engines_asleep(self):
        """Colocated placement: the engines free their GPU memory while the learners beside them train, and
        take it back (once the learners returned their cached blocks) before the weight sync that follows."""
        if self.ctx.recipe.cluster.placement != "colocated":
            yield
            return
        self.rollout.sleep()
        try:
            yield
        finally:
            self.learners.release_cached_memory()
            self.rollout.wake_up()

    def sync_weights(self, version: int) -> None:
        self.deliver_weights(version, self.publish_weights(version))

    def publish_weights(self, version: int):
        """The learner's half of a sync (`posttrain.weight_sync`), while the workers may still generate."""
        return self.weights.publish(version)

    def deliver_weights(self, version: int, published) -> None:
        """The engines' half, once their generation is done."""
        self.weights.deliver(version, published)

    def rollout_metrics(self, step, completions, results) -> dict:
        if not completions:
            return {}
        lengths = torch.tensor([float(c.num_tokens) for c in completions])
        totals = [r.total for r in results if r.total is not None]
        return {"rollout/length_mean": float(lengths.mean()), "rollout/length_max": float(lengths.max()),
                "rollout/worker_s": max(c.timings.get("worker_s", 0.0) for c in completions),
                "rl/staleness_max": step - min(c.weight_version for c in completions),
                "rollout/truncated": sum(c.finish_reason == "length" for c in completions) / len(completions),
                "reward/mean": sum(totals) / max(1, len(totals))}

    def log(self, step, rows, completions, results, advantages) -> None:
        if not self.ctx.recipe.trace.enabled:
            return
        g = self.stage.group_size
        records = []
        for i, (c, r) in enumerate(zip(completions, results)):
            row = rows[i // g]
            images = (save_images(c.images, self.ctx.dir / "trace_images", f"{step}-{i}")
                      if c.images and self.ctx.recipe.trace.save_images else [])
            records.append(sample_record(self.ctx.recipe.name, self.ctx.label, i // g, row, c, r,
                                         advantage=float(advantages[i]), images=images,
                                         hint_level=row.get("hint_level", 0), **self.trace_fields(i, c)))
        self.traces.write_step(step, records)

    def trace_fields(self, index: int, completion) -> dict:
        """Fields a subclass adds to sample `index`'s trace record."""
        return {}

    def close_weight_sync(self) -> None:
        if getattr(self, "weights", None):
            self.weights.close()

    def close(self) -> None:
        for closer in (self.traces.close, self.metrics.close, self.evaluator.close, self.rewards.close,
                       self.rollout.shutdown, self.learners.shutdown, self.close_weight_sync):
            try:
                closer()
            except Exception:  # keep closing the rest; the first error has already been raised
                pass


def _headline(metrics: dict) -> str:
    parts = [f"reward {metrics.get('reward/mean', float('nan')):.2f}"]
    if metrics.get("reward/error_rate"):  # samples with an error, and the component failing most (if one is named)
        failing = {k.removeprefix("reward/error_rate/"): v for k, v in metrics.items()
                   if k.startswith("reward/error_rate/")}
        worst = f" ({max(failing, key=failing.get)})" if failing else ""
        parts.append(f"errors {metrics['reward/error_rate']:.0%}{worst}")
    if "train/loss" in metrics:
        parts.append(f"loss {metrics['train/loss']:.3f}")
    if "rollout/length_mean" in metrics:
        parts.append(f"len {metrics['rollout/length_mean']:.0f}")
    step_s = sum(v for k, v in metrics.items() if k.startswith("timing/"))
    parts.append(f"{step_s:.1f}s/step")
    return "  ".join(parts)


def run_rl(ctx: StageContext) -> dict:
    loop = RlLoop(ctx)
    try:
        return loop.run()
    finally:
        loop.close()

"""What the stages share: the progress bar, the learner group for a stage, checkpoints and the final model."""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column

from posttrain.learners.learner_config import LearnerConfig
from posttrain.stages.context import StageContext


@contextmanager
def stage_progress(ctx: StageContext, total: int, start: int = 0):
    """A bar with ETA and a free-text metrics column (`progress.update(task, metrics="...")`). On a narrow terminal
    the metrics are cut, never the counts and times; where output is not a terminal (a log file, CI) a bar shows
    nothing until it ends, so plain lines are printed instead (`PlainProgress`)."""
    if not ctx.console.is_terminal:
        yield PlainProgress(ctx.console, ctx.label, total, start), None
        return
    whole = dict(no_wrap=True)  # these columns keep their full width
    columns = [TextColumn(f"[bold]{ctx.label}", table_column=Column(**whole)), BarColumn(bar_width=12),
               MofNCompleteColumn(table_column=Column(**whole)), TimeElapsedColumn(table_column=Column(**whole)),
               TextColumn("eta"), TimeRemainingColumn(table_column=Column(**whole)),
               TextColumn("{task.fields[metrics]}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1))]
    with Progress(*columns, console=ctx.console, transient=False, expand=True) as progress:
        task = progress.add_task(ctx.label, total=total, completed=start, metrics="")
        yield progress, task


class PlainProgress:
    """Progress as plain lines, for output that is not a terminal: the first step, then one line every
    `every_s` seconds, and the last step (`update` takes rich's `Progress.update` arguments)."""

    def __init__(self, console, label: str, total: int, start: int = 0, every_s: float = 30.0):
        self.console, self.label, self.total, self.done, self.every_s = console, label, total, start, every_s
        self.start, self.first, self.printed_at = time.monotonic(), start, None

    def update(self, task=None, advance: int = 0, metrics: str = "") -> None:
        self.done += advance
        now = time.monotonic()
        if self.printed_at is None or now - self.printed_at >= self.every_s or self.done >= self.total:
            self.printed_at = now
            elapsed = now - self.start
            rate = (self.done - self.first) / elapsed if elapsed > 0 else 0.0
            eta = timedelta(seconds=round((self.total - self.done) / rate)) if rate else "?"
            self.console.print(f"{self.label} {self.done}/{self.total} {timedelta(seconds=round(elapsed))} "
                               f"eta {eta} {metrics}".rstrip(), soft_wrap=True)


def learner_config(ctx: StageContext, **fixed) -> LearnerConfig:
    config = ctx.recipe.stage_learner(ctx.stage).model_copy(update={"model": str(ctx.model_in), **fixed})
    return LearnerConfig.model_validate(config.model_dump())


def start_learners(ctx: StageContext, config: LearnerConfig):
    """The stage's learner ranks, each in its bundle of the run's placement (its CPUs and GPU reserved)."""
    from posttrain.learners.learner_group import LearnerGroup

    cluster = ctx.recipe.cluster
    return LearnerGroup(config, world_size=cluster.num_learners, cpus_per_rank=cluster.cpus_per_learner,
                        gpus_per_rank=cluster.gpus_per_learner, num_threads=cluster.learner_threads,
                        actor_options=_actor_options(ctx, "learner"))


def training_reward_pool(recipe, components=None):
    """The recipe's reward (weighted components, or a stage's own `components`) on its reward workers, as RL
    and rejection sampling score; components with `serve` run on their own model servers beside the pool
    (`rewards.served`), and everything else is unchanged. A judge named with a `model` generates through a
    rollout engine (`posttrain.judge_engine`)."""
    from posttrain.judge_engine import engine_backed
    from rewards.pool import RewardPool

    components = components or recipe.reward.components
    specs = [c.spec for c in components]
    if len(set(specs)) != len(specs):
        raise ValueError(f"reward components name {sorted({s for s in specs if specs.count(s) > 1})} twice; "
                         f"give each reward once (one weight, one set of options)")
    rule = {engine_backed(c.spec, c.options): _weighted(recipe, c) for c in components if c.serve is None}
    served = [c for c in components if c.serve is not None]
    if not served:
        return RewardPool(rule, {}, recipe.reward)
    from rewards.served import ServedComponent, ServedRewards

    return ServedRewards(rule, [ServedComponent(engine_backed(c.spec, c.options), c.weight,
                                                _resolved(recipe, c.options), c.serve) for c in served],
                         recipe.reward, seed=recipe.seed)


def _weighted(recipe, component):
    """A pool component: its weight, or weight and options (each component keeps its own: a reward model's path,
    a judge's prompt)."""
    if not component.options:
        return component.weight
    return {"weight": component.weight, "options": _resolved(recipe, component.options)}


def _resolved(recipe, options: dict) -> dict:
    """Options with every `stage:<name>` replaced by the model that stage trained."""
    from posttrain.recipe import STAGE_PREFIX

    return {k: str(recipe.stage_output(v)) if isinstance(v, str) and v.startswith(STAGE_PREFIX) else v
            for k, v in options.items()}


def rollout_group(ctx: StageContext):
    """The stage's rollout workers on `ctx.model_in`, running exactly `rollout.engine` (auto: the one
    `chosen_engine` picks, said on the console) with its options, each in its bundle (colocated: beside a
    learner rank, sleeping while it trains)."""
    from posttrain.rollout_engine import chosen_engine, engine_options
    from posttrain.stage_settings import record_choice
    from rollout.group import RolloutGroup

    r, colocated = ctx.recipe.rollout, ctx.recipe.cluster.placement == "colocated"
    engine, why = chosen_engine(r, ctx.model_in)
    if why:
        ctx.console.print(f"[dim]{ctx.label}: rollout engine {escape(why)}[/]")  # `.[vllm]` is no markup
        record_choice(ctx.dir, "rollout.engine", engine, why)
    return RolloutGroup(str(ctx.model_in), r.num_workers, r.cpus_per_worker, threads=r.threads,
                        gpus_per_worker=r.gpus_per_worker, actor_options=_actor_options(ctx, "rollout"),
                        engine=engine, engine_options=engine_options(r, colocated, engine), sleeps=colocated,
                        max_tool_turns=r.max_tool_turns)


def _actor_options(ctx: StageContext, role: str) -> list[dict] | None:
    if ctx.placement is not None:
        return ctx.placement.actor_options(role)
    if ctx.recipe.cluster.placement == "colocated":  # fractional GPUs share a device only inside one bundle
        raise ValueError("cluster.placement: colocated needs the run's placement groups: run the recipe with "
                         "`posttrain run` (or give the StageContext a posttrain.placement.Placement)")
    return None


def latest_checkpoint(ctx: StageContext) -> Path | None:
    root = ctx.dir / "checkpoints"
    steps = sorted((int(p.name.split("-")[1]), p) for p in root.glob("step-*") if p.is_dir()) if root.exists() else []
    return steps[-1][1] if steps else None


def save_checkpoint(ctx: StageContext, group, step: int, keep: int = 2, extra: dict | None = None) -> Path:
    """Save at `step` (= steps done) with the stage's own data state (`extra`) and prune older checkpoints,
    keeping the newest `keep`."""
    path = ctx.dir / "checkpoints" / f"step-{step:06d}"
    group.save(str(path), {"step": step, **(extra or {})})
    old = sorted(p for p in path.parent.glob("step-*") if p.is_dir())[:-keep]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return path


def publish_model(ctx: StageContext, checkpoint: Path, out: Path | None = None) -> None:
    """The stage's output model: the checkpoint's Hugging Face directory, copied to `<stage>/model` (the next
    stage's policy) or to `out` (a model beside the policy, such as a reward model)."""
    out = out or ctx.model_out
    temp = out.with_name(out.name + ".tmp")
    shutil.rmtree(temp, ignore_errors=True)
    shutil.copytree(checkpoint / "model", temp)
    shutil.rmtree(out, ignore_errors=True)
    temp.rename(out)

"""On-policy distillation stage (`kind: distill`): the RL stage's loop with the teachers' signal as the advantage.

Everything but one phase is `RlLoop`'s (prompt stream, G samples per prompt on the rollout workers, rewards, the
learner step, weight sync, evaluation, checkpoints, traces and metrics). The advantages phase adds, after the
GRPO advantages (scaled by `distill.rl_weight`, 0 by default): each sample is routed to a teacher by its row's
`mode` or `task` (`route`, else the default teacher), and that teacher's server returns the log-prob of each of
the sample's own tokens (`posttrain.teacher_server`). The learner's loss `opd` (`posttrain.losses.opd`) turns
log p_teacher - log p_student into a per-token advantage: reverse KL, as in Keye-VL-2.0's MOPD, NeMo-RL's `opd`
and TRL's distillation trainer. Metrics per step: `distill/kl/<teacher>` (token mean of log p_student -
log p_teacher, the k1 estimate of the reverse KL, over that teacher's samples), `distill/samples/<teacher>`,
`timing/teacher_s`; each trace record names its `teacher` and the mean `teacher_gap`.

Boundary: this module knows nothing of how a teacher computes log-probs or of the loss's form. Departure: with
`rl_weight: 0` a sample whose reward failed still distils (its reward is not used).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from posttrain.stages.context import StageContext
from posttrain.stages.rl import AdvantageResult, RlLoop, is_scored, rl_batch, timed
from posttrain.teacher_server import TeacherReplicas
from posttrain.traces import sample_record, save_images

ROUTE_KEYS = ("mode", "task")


def route_of(row: dict, teachers) -> str:
    """The label of the teacher whose `route` the row matches (every key equal), else the default teacher's.

    >>> from posttrain.recipe import Teacher
    >>> ts = [Teacher(model="m/think", route={"mode": "think"}), Teacher(model="m/base")]
    >>> route_of({"mode": "think"}, ts), route_of({"mode": "no_think"}, ts)
    ('think', 'base')
    """
    default = next(t.label for t in teachers if not t.route)
    return next((t.label for t in teachers if t.route and all(row.get(k) == v for k, v in t.route.items())),
                default)


def teacher_logprobs(rows: list[dict], completions: list, group_size: int, teachers: dict, routes: list[str]):
    """Each sample's teacher log-probs (one list per completion, its tokens') from the teacher `routes` name, one
    call per teacher; and the step's per-teacher metrics. `teachers`: label -> anything with `logprobs(pairs)`."""
    out: list[list[float]] = [[] for _ in completions]
    stats: dict[str, float] = {}
    for label, server in teachers.items():
        mine = [i for i, r in enumerate(routes) if r == label]
        stats[f"distill/samples/{label}"] = float(len(mine))
        if not mine:
            continue
        answers = server.logprobs([(completions[i].prompt_ids, completions[i].token_ids) for i in mine])
        gaps, count = 0.0, 0
        for i, lp in zip(mine, answers):
            c = completions[i]
            if len(lp) != len(c.token_ids):
                raise ValueError(f"teacher {label} returned {len(lp)} log-probs for {len(c.token_ids)} tokens")
            out[i] = lp
            for s, t, m in zip(c.logprobs, lp, c.loss_mask):
                gaps, count = gaps + m * (s - t), count + m
        stats[f"distill/kl/{label}"] = gaps / max(count, 1)
    return out, stats


class DistillLoop(RlLoop):
    def __init__(self, ctx: StageContext):
        super().__init__(ctx)
        temperature = self.sampling.logprob_temperature
        self.teachers = {t.label: TeacherReplicas(t.model, t.replicas, t.gpus, t.cpus, t.batch_size, temperature)
                         for t in self.stage.teachers}
        self.routes: list[str] = []
        self.teacher: list[list[float]] = []

    def advantages(self, step, rows, completions, scored, timings) -> AdvantageResult:
        """RlLoop's kept groups and GRPO advantages (x rl_weight), and each sample's teacher log-probs, kept for
        `train` and `log` (`timing/teacher_s`)."""
        kept = super().advantages(step, rows, completions, scored, timings)
        with timed(timings, "teacher"):
            g = self.stage.group_size
            self.routes = [route_of(kept.rows[i // g], self.stage.teachers) for i in range(len(kept.completions))]
            self.teacher, stats = teacher_logprobs(kept.rows, kept.completions, g, self.teachers, self.routes)
        return replace(kept, advantages=kept.advantages * self.stage.distill.rl_weight,
                       stats={**kept.stats, **stats})

    def train(self, rows, completions, results, advantages) -> dict:
        """The RL stage's batch, with the teacher's log-probs at the completion positions (`ref_logprobs`)."""
        if not completions:
            return {"rl/skipped_step": 1.0}
        g = self.stage.group_size
        batch = rl_batch([rows[i // g] for i in range(len(completions))], completions, advantages, self.encoder)
        teacher = torch.zeros_like(batch.old_logprobs)
        for b, (c, lp) in enumerate(zip(completions, self.teacher)):
            teacher[b, len(c.prompt_ids):len(c.prompt_ids) + len(lp)] = torch.tensor(lp, dtype=teacher.dtype)
        batch = batch.with_fields(ref_logprobs=teacher)
        skipped = torch.tensor([self.stage.distill.rl_weight > 0 and not is_scored(r) for r in results])
        if skipped.any():  # the reward is part of the loss: samples without one carry none
            batch = batch.with_fields(loss_mask=batch.loss_mask * (~skipped).long()[:, None])
        return {f"train/{k}": v for k, v in self.learners.train_step(batch).items()}

    def log(self, step, rows, completions, results, advantages) -> None:
        """RlLoop's records, each naming its teacher and the mean log p_student - log p_teacher of its tokens."""
        if not self.ctx.recipe.trace.enabled:
            return
        g, records = self.stage.group_size, []
        for i, (c, r) in enumerate(zip(completions, results)):
            row = rows[i // g]
            images = (save_images(c.images, self.ctx.dir / "trace_images", f"{step}-{i}")
                      if c.images and self.ctx.recipe.trace.save_images else [])
            gaps = [s - t for s, t in zip(c.logprobs, self.teacher[i])]
            records.append(sample_record(self.ctx.recipe.name, self.ctx.label, i // g, row, c, r,
                                         advantage=float(advantages[i]), images=images,
                                         hint_level=row.get("hint_level", 0), teacher=self.routes[i],
                                         teacher_gap=sum(gaps) / max(1, len(gaps))))
        self.traces.write_step(step, records)

    def close(self) -> None:
        for teacher in getattr(self, "teachers", {}).values():
            try:
                teacher.close()
            except Exception:  # keep closing the rest
                pass
        super().close()


def run_distill(ctx: StageContext) -> dict:
    loop = DistillLoop(ctx)
    try:
        return loop.run()
    finally:
        loop.close()

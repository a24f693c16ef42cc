"""On-policy distillation stage (`kind: distill`): the RL stage's loop with the teachers' signal as the advantage.

Everything but one phase is `RlLoop`'s (prompt stream, G samples per prompt on the rollout workers, rewards, the
learner step, weight sync, evaluation, checkpoints, traces and metrics). The advantages phase adds, after the
GRPO advantages (scaled by `distill.rl_weight`, 0 by default): each sample is routed to a teacher by its row's
`mode` or `task` (`route`, else the default teacher), and that teacher's server returns the log-prob of each of
the sample's own tokens (`posttrain.teacher_server`). The learner's loss `opd` (`posttrain.losses.opd`) turns
log p_teacher - log p_student into a per-token advantage: reverse KL, as in Keye-VL-2.0's MOPD, NeMo-RL's `opd`
and TRL's distillation trainer. Metrics per step: `distill/kl/<teacher>` (token mean of log p_student -
log p_teacher, the k1 estimate of the reverse KL, over that teacher's samples), `distill/samples/<teacher>`,
`timing/teacher_s`; each trace record names its `teacher`, the mean `teacher_gap`, and per token the gap
(`teacher_gaps`, to 3 decimals) and text (`token_texts`) that the trace viewers draw as a heat strip.

Boundary: this module knows nothing of how a teacher computes log-probs or of the loss's form. Departure: with
`rl_weight: 0` a sample whose reward failed still distils (its reward is not used).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from posttrain.recipe import STAGE_PREFIX
from posttrain.stages.context import StageContext
from posttrain.stages.rl import AdvantageResult, RlLoop, is_scored, timed
from posttrain.teacher_server import TeacherReplicas

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


def token_texts(tokenizer, ids: list[int], cache: dict[int, str]) -> list[str]:
    """Each token decoded alone (a character split over tokens shows as U+FFFD pieces). `cache` maps id -> text:
    a step's records hold thousands of tokens of a vocabulary seen again and again, and decoding is the cost."""
    missing = sorted({i for i in ids if i not in cache})
    cache.update(zip(missing, tokenizer.batch_decode([[i] for i in missing])))
    return [cache[i] for i in ids]


def refuse_images(rows: list[dict], completions: list) -> None:
    """Teachers receive token ids only, so an image's placeholder tokens would reach them without its pixels and
    they would score blind: refused rather than distilled wrong."""
    if any(row.get("images") for row in rows) or any(c.images for c in completions):
        raise ValueError("distill: a prompt or tool turn of this step carries images, but teachers score text only "
                         "so far (an image's pixels are not sent); give the distill stage text prompts")


def start_teachers(teachers, temperature: float, path_of) -> dict[str, TeacherReplicas]:
    """Each recipe `Teacher`'s supervised servers, by label; `path_of` turns its `model` into a directory."""
    return {t.label: TeacherReplicas(path_of(t.model), t.replicas, t.gpus, t.cpus, t.batch_size, temperature,
                                     timeout_s=t.timeout_s, startup_timeout_s=t.startup_timeout_s,
                                     max_replacements=t.max_replacements) for t in teachers}


class DistillLoop(RlLoop):
    def __init__(self, ctx: StageContext):
        super().__init__(ctx)
        self.teachers = start_teachers(self.stage.teachers, self.sampling.logprob_temperature, self.model_path)
        self.routes: list[str] = []
        self.teacher: list[list[float]] = []
        self.token_text: dict[int, str] = {}  # token id -> its text, for the trace records

    def model_path(self, model: str) -> str:
        """A teacher's directory: as given, or the model an earlier stage of this recipe trained (`stage:<name>`)."""
        return str(self.ctx.recipe.stage_output(model)) if model.startswith(STAGE_PREFIX) else model

    def advantages(self, step, rows, completions, scored, timings) -> AdvantageResult:
        """RlLoop's kept groups and GRPO advantages (x rl_weight), and each sample's teacher log-probs, kept for
        `train` and `log` (`timing/teacher_s`)."""
        kept = super().advantages(step, rows, completions, scored, timings)
        with timed(timings, "teacher"):
            g = self.stage.group_size
            refuse_images(kept.rows, kept.completions)
            self.routes = [route_of(kept.rows[i // g], self.stage.teachers) for i in range(len(kept.completions))]
            self.teacher, stats = teacher_logprobs(kept.rows, kept.completions, g, self.teachers, self.routes)
        return replace(kept, advantages=kept.advantages * self.stage.distill.rl_weight,
                       stats={**kept.stats, **stats})

    def train_batch(self, rows, completions, results, advantages):
        """The RL stage's batch, with the teacher's log-probs at the completion positions (`ref_logprobs`)."""
        batch = super().train_batch(rows, completions, results, advantages)
        teacher = torch.zeros_like(batch.old_logprobs)
        for b, (c, lp) in enumerate(zip(completions, self.teacher)):
            teacher[b, len(c.prompt_ids):len(c.prompt_ids) + len(lp)] = torch.tensor(lp, dtype=teacher.dtype)
        return batch.with_fields(ref_logprobs=teacher)

    def carries_no_loss(self, result) -> bool:
        """Only where the reward is part of the loss does a sample without one carry none."""
        return self.stage.distill.rl_weight > 0 and not is_scored(result)

    def trace_fields(self, index: int, completion) -> dict:
        """Each record names its teacher and the mean log p_student - log p_teacher of its tokens, and carries the
        gap and text of each token: where in an answer the student and teacher disagree is what a reader looks for.
        Gaps are rounded to 3 decimals to keep the traces small."""
        gaps = [s - t for s, t in zip(completion.logprobs, self.teacher[index])]
        return {"teacher": self.routes[index], "teacher_gap": sum(gaps) / max(1, len(gaps)),
                "teacher_gaps": [round(g, 3) for g in gaps],
                "token_texts": token_texts(self.encoder.tokenizer, completion.token_ids, self.token_text)}

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

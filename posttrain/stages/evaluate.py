"""Held-out evaluation: greedy answers to the eval prompts in each mode, scored by `reward.eval_reward`.

Used inside RL stages (before, every `eval_every` steps, after) and as a stage of its own (`kind: eval`).
Reports accuracy per mode with 95% Wilson intervals and the think-rate in auto mode, and the suite
(`posttrain.evaluation.suite_summary`): accuracy and mean score per task, format-error and repetition rates, and
how often auto_think chooses to think on easy and hard prompts. Every answer goes to
`eval_traces.jsonl` in the trace format, so `posttrain traces show <run> --stage <stage>:eval` shows what the
model said, not only how often it was right.
"""

from __future__ import annotations

from dataclasses import dataclass

from keye_protocol.chat import parse_response
from posttrain.evaluation import Answer, ModeAccuracy, accuracy_by_mode, suite_summary, word_repetition
from posttrain.prompts import load_prompts, request_of, sample_of
from posttrain.stages.context import StageContext
from posttrain.traces import StepLog, read_log, sample_record
from rewards.format import format_problems


@dataclass
class EvalResult:
    label: str
    by_mode: dict[str, ModeAccuracy]
    suite: dict | None = None

    @property
    def summary(self) -> dict:
        return {m: {"accuracy": a.accuracy, "interval": list(a.interval), "n": a.total,
                    **({"think_rate": a.reasoned / a.total} if m == "auto_think" and a.total else {})}
                for m, a in self.by_mode.items()}

    @property
    def metrics(self) -> dict:
        out = {}
        for a in self.by_mode.values():
            out.update(a.metrics())
        if self.suite:
            out.update({"eval/format_errors": self.suite["format_errors"]["rate"],
                        "eval/repetitive": self.suite["repetitive"]["rate"]})
        return out

    def describe(self) -> str:
        return "; ".join(a.describe() for a in self.by_mode.values())

    def compare(self, before: dict | None) -> str:
        """'think 45.0% -> 90.6%; ...' against an earlier result's `summary` (None: this result alone)."""
        if before is None:
            return self.describe()
        parts = []
        for mode, after in self.by_mode.items():
            old = before.get(mode)
            parts.append(f"{mode} {100 * old['accuracy']:.1f}% -> {100 * after.accuracy:.1f}%" if old else
                         after.describe())
        return "; ".join(parts)


class Evaluator:
    def __init__(self, ctx: StageContext, rollout, modes: list[str] | None = None, reward: str | None = None,
                 resume_after: int | None = None):
        """`resume_after`: an RL stage resumed from the checkpoint of that step drops later evaluations from the
        logs (they are run again), as its traces do."""
        from rewards.pool import RewardPool

        self.ctx, self.rollout = ctx, rollout
        path = ctx.data_file("eval.jsonl")
        self.rows = load_prompts(path, "e") if path.exists() else []
        data_modes = getattr(ctx.recipe.data, "modes", None)
        self.chosen = modes  # None: every row in its own mode
        self.modes = modes or data_modes or sorted({r.get("mode") or "auto_think" for r in self.rows})
        override, reward = reward, ctx.recipe.reward
        self.pool = RewardPool(override or reward.eval_reward, {},  # the recipe's pool settings, one worker
                               reward.model_copy(update={"num_workers": 1, "on_error": "zero", "spare": False}))
        self.log = StepLog(ctx.dir / "eval.jsonl", resume_after)
        self.traces = StepLog(ctx.dir / "eval_traces.jsonl", resume_after) if ctx.recipe.trace.enabled else None

    def run(self, step: int, label: str) -> EvalResult:
        if not self.rows:
            return EvalResult(label, {})
        sampling = self.ctx.recipe.rollout.eval_sampling.model_copy(update={"n": 1})
        # rows that name a mode are asked in it; the others in every evaluated mode
        rows = [r for r in self.rows if r.get("mode") and (self.chosen is None or r["mode"] in self.chosen)]
        rows += [{**r, "mode": m} for m in self.modes for r in self.rows if not r.get("mode")]
        completions = self.rollout.generate([request_of(r) for r in rows], sampling)
        results = self.pool.score([sample_of(r, c, i, 1) for i, (r, c) in enumerate(zip(rows, completions))]).results
        answers = [_answer(r, c, res) for r, c, res in zip(rows, completions, results)]
        result = EvalResult(label, accuracy_by_mode([(a.mode, a.correct, a.reasoned) for a in answers]),
                            suite_summary(answers))
        self.log.write_step(step, [{"label": label, **result.summary, "suite": result.suite}])
        if self.traces:
            stage = f"{self.ctx.label}:eval"
            self.traces.write_step(step, [sample_record(self.ctx.recipe.name, stage, i, row, completion, res,
                                                        label=label)
                                          for i, (row, completion, res) in enumerate(zip(rows, completions, results))])
        self.ctx.console.print(f"[bold]eval {label}[/]: {result.describe()}")
        return result

    def recorded(self, label: str) -> dict | None:
        """The summary an earlier process logged under `label` (a resumed stage's "before"), or None."""
        for record in read_log(self.ctx.dir / "eval.jsonl"):
            if record.get("label") == label:
                return {mode: value for mode, value in record.items() if isinstance(value, dict) and mode != "suite"}
        return None

    def close(self) -> None:
        self.log.close()
        if self.traces:
            self.traces.close()
        self.pool.close()


def _answer(row: dict, completion, result) -> Answer:
    return Answer(row["mode"], row.get("source") or "", float(result.total or 0.0),
                  parse_response(completion.text).reasoned, not format_problems(completion.text, row["mode"]),
                  word_repetition(completion.text), row.get("difficulty"))


def run_eval(ctx: StageContext) -> dict:
    from posttrain.stages.common import rollout_group

    rollout = rollout_group(ctx)
    evaluator = Evaluator(ctx, rollout, ctx.stage.modes, ctx.stage.reward, resume_after=-1)  # all run again
    try:
        result = evaluator.run(0, ctx.label)
    finally:
        evaluator.close()
        rollout.shutdown()
    return {"eval": result.summary, "suite": result.suite, "headline": result.describe()}

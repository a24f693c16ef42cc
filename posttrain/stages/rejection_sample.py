"""The `rejection_sample` stage: Keye-VL's iterative alignment collects its data from the model itself.

Every prompt of `<data>/prompts.jsonl` (or `prompts` of them from row `offset` on) is answered
`samples_per_prompt` times with `rollout.sampling` (or the stage's own `sampling`) and every answer is scored by
the recipe's reward (or the stage's own `reward` components: Keye's alignment adds rule scores such as
repetition). The stage then writes `<stage>/data/` for the stages after it:
- `pairs.jsonl`: per prompt, the best-scored answer as chosen and the worst as rejected (prompts whose answers
  all score the same teach no preference and give no pair), for a `preference` or `reward_model` stage; with
  `pairs: all`, every distinct answer against every distinct lower-scored one, the best-vs-worst pair first
  (more pairs from the same samples; a `reward_model` stage holds out whole prompts). Answers whose reward
  failed (error, timeout, skipped) or that carry sandbox images (their pixels are not in a text row) take no
  part: they are in the traces only;
- `sft.jsonl`: per prompt, the best answer if its reward is >= `accept` (rejection-sampled SFT rows).
The stages after it read the other data files (held-out `eval.jsonl`, `prompts.jsonl`) where they were.
Every scored answer goes to `traces.jsonl`, so what was chosen and rejected can be read back.
"""

from __future__ import annotations

import shutil

from posttrain.data import write_jsonl
from posttrain.prompts import load_prompts, messages_of, request_of, sample_of
from posttrain.stages.common import rollout_group, stage_progress, training_reward_pool
from posttrain.stages.context import StageContext
from posttrain.traces import StepLog, sample_record


def run_rejection_sample(ctx: StageContext) -> dict:
    stage, n = ctx.stage, ctx.stage.samples_per_prompt
    rows = load_prompts(ctx.data_file("prompts.jsonl"), "p")[stage.offset:]
    rows = rows[: stage.prompts] if stage.prompts else rows
    if not rows:
        raise ValueError(f"stage {ctx.label}: no prompts in {ctx.data_file('prompts.jsonl')} from row {stage.offset}")
    sampling = (stage.sampling or ctx.recipe.rollout.sampling).model_copy(update={"n": n})
    rollout, rewards = rollout_group(ctx), training_reward_pool(ctx.recipe, stage.reward)
    # a stopped stage starts again from scratch
    traces = StepLog(ctx.dir / "traces.jsonl", resume_after=-1) if ctx.recipe.trace.enabled else None
    section = ctx.recipe.rollout
    pairs, accepted = [], []
    batch = max(1, section.num_workers * section.max_batch_size // n)  # prompts per generate call
    try:
        with stage_progress(ctx, len(rows)) as (progress, task):
            for first in range(0, len(rows), batch):
                chunk = rows[first:first + batch]
                completions = rollout.generate([request_of(r) for r in chunk], sampling)
                scored = rewards.score([sample_of(chunk[i // n], c, i // n, n) for i, c in enumerate(completions)])
                for k, row in enumerate(chunk):
                    answers = usable(completions[k * n:(k + 1) * n], scored.results[k * n:(k + 1) * n])
                    pairs += PAIRINGS[stage.pairs](row, answers)
                    accepted += accepted_answer(row, answers, stage.accept)
                if traces:
                    records = [sample_record(ctx.recipe.name, ctx.label, first + i // n, chunk[i // n], c, res)
                               for i, (c, res) in enumerate(zip(completions, scored.results))]
                    traces.write_step(0, records)
                progress.update(task, advance=len(chunk))
    finally:
        if traces:
            traces.close()
        rewards.close()
        rollout.shutdown()
    write_data(ctx, pairs, accepted)
    headline = (f"{len(pairs)} pairs, {len(accepted)} accepted answers from {len(rows)} prompts x {n} samples "
                f"({ctx.dir / 'data'})")
    return {"prompts": len(rows), "pairs": len(pairs), "accepted": len(accepted), "headline": headline}


def usable(completions, results) -> list[tuple[float, str]]:
    """(reward, text) of the answers that can stand in a pair or an SFT row."""
    return [(res.total, c.text) for c, res in zip(completions, results)
            if res.total is not None and not res.error and c.finish_reason != "error" and not c.images]


def best_and_worst(row: dict, answers: list[tuple[float, str]]) -> list[dict]:
    """[pair] when the best answer outscores the worst one of another text, else [].

    >>> best_and_worst({"id": "q", "prompt": "1+1?"}, [(0.0, "3"), (1.0, "2"), (0.0, "4")])[0]["chosen"]
    '2'
    """
    if not answers:
        return []
    best = max(answers, key=lambda a: a[0])
    others = [a for a in answers if a[1] != best[1]]
    worst = min(others, key=lambda a: a[0]) if others else best
    if best[0] <= worst[0]:
        return []
    return [{"id": row["id"], "messages": messages_of(row), "mode": row.get("mode"), "chosen": best[1],
             "rejected": worst[1], "chosen_reward": best[0], "rejected_reward": worst[0]}]


def every_pair(row: dict, answers: list[tuple[float, str]]) -> list[dict]:
    """Each distinct answer text against each distinct lower-scored one, best vs worst first (a text sampled twice
    counts once).

    >>> [(p["chosen"], p["rejected"]) for p in every_pair({"id": "q", "prompt": "1+1?"},
    ...                                                  [(0.0, "3"), (1.0, "2"), (0.0, "4"), (1.0, "2"), (1.0, "02")])]
    [('2', '3'), ('2', '4'), ('02', '3'), ('02', '4')]
    """
    first = best_and_worst(row, answers)
    if not first:
        return []
    distinct: dict[str, float] = {}
    for reward, text in answers:
        distinct.setdefault(text, reward)
    head = (first[0]["chosen"], first[0]["rejected"])
    return first + [_pair(row, distinct, c, r) for c, c_reward in distinct.items()
                    for r, r_reward in distinct.items() if c_reward > r_reward and (c, r) != head]


def _pair(row: dict, rewards: dict[str, float], chosen: str, rejected: str) -> dict:
    return {"id": row["id"], "messages": messages_of(row), "mode": row.get("mode"), "chosen": chosen,
            "rejected": rejected, "chosen_reward": rewards[chosen], "rejected_reward": rewards[rejected]}


PAIRINGS = {"best_vs_worst": best_and_worst, "all": every_pair}


def accepted_answer(row: dict, answers: list[tuple[float, str]], accept: float) -> list[dict]:
    if not answers:
        return []
    reward, text = max(answers, key=lambda a: a[0])
    if reward < accept:
        return []
    return [{"id": row["id"], "messages": [*messages_of(row), {"role": "assistant", "content": text}],
             "mode": row.get("mode"), "reward": reward}]


def write_data(ctx: StageContext, pairs: list[dict], accepted: list[dict]) -> None:
    out = ctx.dir / "data"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    write_jsonl(out / "pairs.jsonl", pairs)
    write_jsonl(out / "sft.jsonl", accepted)
    (out / "done").write_text("")


"""The `cold_start_build` stage: build the five-mode mixture and hand it to the next stages as data.

Runs `cold_start_data.build` into `<stage>/mixture/` (dataset, media, report), then writes `<stage>/data/`:
`sft.jsonl` (the mixture's chats, media paths absolute), `eval.jsonl` (its held-out prompts, `eval_size` per
mode and source) and, with `rl_prompts`, `prompts.jsonl` (that many fresh prompts per mode and source of the
image and text buckets, kept apart from the held-out ones, for the RL and rejection-sampling stages). Rows keep
their task's `kind`, so the `answer` reward checks each one as its task is checked. Later stages read these
files instead of the recipe's `data` section.
"""

from __future__ import annotations

import json
from pathlib import Path

from cold_start_data.config import BuildConfig
from posttrain.data import write_jsonl
from posttrain.stages.common import stage_progress
from posttrain.stages.context import StageContext


def sft_rows(mixture: Path) -> list[dict]:
    from cold_start_data.writer import load_mixture

    rows = []
    for row in load_mixture(mixture):
        messages = [{"role": m["role"], "content": [_item(i) for i in m["content"]]} for m in row["messages"]]
        rows.append({"id": row["id"], "messages": messages, "mode": row["mode"], "source": row["source"]})
    return rows


def _item(item: dict) -> dict:
    if item.get("image"):
        return {"type": "image", "image": item["image"]}
    if item.get("video"):
        return {"type": "video", "video": item["video"], "fps": item.get("fps") or 2.0}
    return {"type": "text", "text": item["text"]}


def prompt_rows(mixture: Path, name: str = "eval.jsonl", min_steps: int = 3) -> list[dict]:
    """Rows of a prompt file of the mixture (`cold_start_data.evalset.eval_rows`) as the stages read them; a
    task is `hard` when its solver needs `min_steps` steps (the complexity judge's rule), else `easy`."""
    rows = []
    for line in (mixture / name).read_text().split("\n"):  # not splitlines: U+2028 may sit inside a string
        if not line.strip():
            continue
        row = json.loads(line)
        content = [{"type": "image", "image": str(mixture.resolve() / p)} for p in row.get("images", [])]
        if row.get("video"):
            content.append({"type": "video", "video": [str(mixture.resolve() / p) for p in row["video"]],
                            "fps": row.get("fps") or 2.0})
        content.append({"type": "text", "text": row["prompt"]})
        rows.append({"id": row["id"], "messages": [{"role": "user", "content": content}], "mode": row["mode"],
                     "answer": row["answer"], "source": row["source"], "prompt": row["prompt"],
                     "kind": row["kind"], "steps": row.get("steps"),
                     "difficulty": None if row.get("steps") is None else
                     "hard" if row["steps"] >= min_steps else "easy"})
    return rows


def write_rl_prompts(config, mixture: Path, per_kind: int, modes: list[str]) -> None:
    from cold_start_data.evalset import eval_rows, held_out, rl_prompts
    from cold_start_data.writer import MediaWriter, write_jsonl as write_mixture_jsonl

    tasks = rl_prompts(config, per_kind, modes, held_out(config))
    write_mixture_jsonl(eval_rows(tasks, MediaWriter(mixture), prefix="rl"), mixture / "rl_prompts.jsonl")


def teacher_engine(config: BuildConfig):
    """The engine a model teacher samples with, loaded from `teacher.model_dir` (None for the solver teacher):
    loading a model is this package's job, not `cold_start_data`'s."""
    if config.teacher.kind != "model":
        return None
    from rollout.hf_engine import TransformersEngine  # torch and the model load only for a model teacher

    return TransformersEngine.from_pretrained(config.teacher.model_dir)


def run_cold_start_build(ctx: StageContext) -> dict:
    from cold_start_data.build import build

    config = BuildConfig(size=ctx.stage.size, seed=ctx.recipe.seed, **ctx.stage.config)
    mixture = ctx.dir / "mixture"
    if not (mixture / "report" / "report.json").exists():
        with stage_progress(ctx, config.size) as (progress, task):
            # a build stopped half way is started again from scratch (it is seeded: same result)
            build(config, mixture, progress=lambda n: progress.update(task, advance=n), overwrite=True,
                  engine=teacher_engine(config))
    data = ctx.dir / "data"
    data.mkdir(exist_ok=True)
    rows = sft_rows(mixture)
    write_jsonl(data / "sft.jsonl", rows)
    write_jsonl(data / "eval.jsonl", prompt_rows(mixture, min_steps=config.judge.min_steps))
    if ctx.stage.rl_prompts:
        write_rl_prompts(config, mixture, ctx.stage.rl_prompts, ctx.stage.rl_modes)
        write_jsonl(data / "prompts.jsonl", prompt_rows(mixture, "rl_prompts.jsonl", config.judge.min_steps))
    (data / "done").write_text("")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["mode"]] = counts.get(row["mode"], 0) + 1
    repetitive = sum(_repetitive(row) for row in rows) / max(1, len(rows))
    return {"samples": len(rows), "by_mode": counts, "repetitive": repetitive,
            "headline": ", ".join(f"{m} {n}" for m, n in sorted(counts.items()))
            + f"; {100 * repetitive:.1f}% of responses repetitive ({mixture}/report)"}


def _repetitive(row: dict) -> bool:
    """The evaluation's rule (`posttrain.evaluation.REPETITIVE`) applied to the row's response."""
    from posttrain.evaluation import REPETITIVE, word_repetition

    return word_repetition(" ".join(item.get("text") or "" for item in row["messages"][-1]["content"])) > REPETITIVE

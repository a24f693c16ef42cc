"""The `cold_start_build` stage: build the five-mode mixture and hand it to the next stages as data.

Runs `cold_start_data.build` into `<stage>/mixture/` (dataset, media, report), then writes `<stage>/data/`:
`sft.jsonl` (the mixture's chats, media paths absolute) and `eval.jsonl` (its held-out prompts, one per
mode and source). Later stages read that data directory instead of the recipe's `data` section.
"""

from __future__ import annotations

import json
from pathlib import Path

from posttrain.data import write_jsonl
from posttrain.runner import StageContext, stage_kind
from posttrain.stages.common import stage_progress


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


def eval_rows(mixture: Path) -> list[dict]:
    rows = []
    for line in (mixture / "eval.jsonl").read_text().splitlines():
        row = json.loads(line)
        content = [{"type": "image", "image": str(mixture.resolve() / p)} for p in row.get("images", [])]
        if row.get("video"):
            content.append({"type": "video", "video": [str(mixture.resolve() / p) for p in row["video"]],
                            "fps": row.get("fps") or 2.0})
        content.append({"type": "text", "text": row["prompt"]})
        rows.append({"id": row["id"], "messages": [{"role": "user", "content": content}], "mode": row["mode"],
                     "answer": row["answer"], "source": row["source"], "prompt": row["prompt"]})
    return rows


@stage_kind("cold_start_build")
def run_cold_start_build(ctx: StageContext) -> dict:
    from cold_start_data.build import build
    from cold_start_data.config import BuildConfig

    config = BuildConfig(size=ctx.stage.size, seed=ctx.recipe.seed, **ctx.stage.config)
    mixture = ctx.dir / "mixture"
    if not (mixture / "report" / "report.json").exists():
        with stage_progress(ctx, config.size) as (progress, task):
            # a build stopped half way is started again from scratch (it is seeded: same result)
            build(config, mixture, progress=lambda n: progress.update(task, advance=n), overwrite=True)
    data = ctx.dir / "data"
    data.mkdir(exist_ok=True)
    rows = sft_rows(mixture)
    write_jsonl(data / "sft.jsonl", rows)
    write_jsonl(data / "eval.jsonl", eval_rows(mixture))
    (data / "done").write_text("")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["mode"]] = counts.get(row["mode"], 0) + 1
    return {"samples": len(rows), "by_mode": counts,
            "headline": ", ".join(f"{m} {n}" for m, n in sorted(counts.items())) + f" ({mixture}/report)"}

"""Held-out evaluation prompts and the decontamination index built from them.

The build draws `eval_size` prompts per (bucket, mode, source) from random streams of their own (so they
are independent of the training stream), writes them to ``eval.jsonl``, and indexes them together with any
external evaluation sets (`eval_sets`: JSONL/Parquet rows with `prompt` or `messages`, and image paths).
Training prompts that match an indexed one (text and images, see `dedup`) are rejected as contaminated.
This module knows nothing about teachers.
"""

from __future__ import annotations

import random
from pathlib import Path

from cold_start_data.config import BuildConfig
from cold_start_data.dedup import PromptIndex
from cold_start_data.mixer import plan
from cold_start_data.phash import visual_hashes
from cold_start_data.pipeline import task_hashes
from cold_start_data.sources import make_task
from cold_start_data.tasks import Task
from cold_start_data.user_data import BadRow, read_rows, row_messages
from cold_start_data.writer import MediaWriter
from keye_protocol.chat import strip_mode_suffix, vision_inputs


def held_out(config: BuildConfig) -> list[tuple[str, str, str, Task]]:
    """(bucket, mode, source, task) for every slot kind of the full plan; no duplicate prompts."""
    return draw_prompts(config, "eval", config.eval_size, PromptIndex(config.phash_distance), _slot_kinds(config))


def rl_prompts(config: BuildConfig, per_kind: int, modes: list[str],
               held: list[tuple[str, str, str, Task]]) -> list[tuple[str, str, str, Task]]:
    """Prompts for RL after the cold start: `per_kind` per (bucket, mode, source) of the plan's image and text
    buckets in `modes` (no video, no agentic: their answers are too long for RL at this scale), drawn from
    streams of their own and kept apart from the held-out prompts `held`, as the training data is."""
    wanted = [(b, m, s) for b, m, s in _slot_kinds(config) if b == m and m in modes]
    return draw_prompts(config, "rl", per_kind, eval_index(config, held), wanted)


def _slot_kinds(config: BuildConfig) -> list[tuple[str, str, str]]:
    return list(dict.fromkeys((s.bucket, s.mode, s.source) for s in plan(config.model_copy(update={"size": 10_000}))))


def draw_prompts(config: BuildConfig, stream: str, per_kind: int, index: PromptIndex,
                 kinds: list[tuple[str, str, str]]) -> list[tuple[str, str, str, Task]]:
    """`per_kind` tasks per (bucket, mode, source) of `kinds` from the `stream` random streams, none matching a
    prompt already in `index` (which the drawn prompts join)."""
    out = []
    for bucket, mode, source in kinds:
        rng = random.Random(f"{config.seed}:{stream}:{bucket}:{mode}:{source}")
        kept = 0
        for _ in range(per_kind * 20):
            if kept == per_kind:
                break
            task = make_task(source, rng)
            hashes = task_hashes(task)
            if not index.contains(task.prompt, hashes):
                index.add(task.prompt, hashes)
                out.append((bucket, mode, source, task))
                kept += 1
    return out


def external_prompts(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    """(prompt text, visual hashes) of every readable row of an evaluation file; unreadable rows are skipped
    (an evaluation set is only read here, never trained on)."""
    prompts = []
    for _, row in read_rows(path):
        try:
            if isinstance(row, BadRow) or not isinstance(row, dict):
                continue
            messages = [m for m in row_messages(row, path.parent) if m["role"] != "assistant"]
        except BadRow:
            continue
        users = [m for m in messages if m["role"] == "user"]
        if not users:
            continue
        text = "".join(i.get("text") or "" for i in users[-1]["content"] if i["type"] == "text")
        images, videos = vision_inputs(messages)
        prompts.append((strip_mode_suffix(text), visual_hashes(images, videos[0]["video"] if videos else None)))
    return prompts


def eval_index(config: BuildConfig, tasks: list[tuple[str, str, str, Task]]) -> PromptIndex:
    index = PromptIndex(config.phash_distance)
    for *_, task in tasks:
        index.add(task.prompt, task_hashes(task))
    for path in config.eval_sets:
        for text, hashes in external_prompts(Path(path)):
            index.add(text, hashes)
    return index


def eval_rows(tasks: list[tuple[str, str, str, Task]], media: MediaWriter, prefix: str = "eval") -> list[dict]:
    """Prompt rows (`prompt`, `answer`, `mode`, the solver's step count `steps`, ...) as `posttrain generate` and
    the RL evaluation read them."""
    rows = []
    for k, (bucket, mode, source, task) in enumerate(tasks):
        owner = f"{prefix}-{k:06d}"
        images = [media.save(image, owner, str(i)) for i, image in enumerate(task.images)]
        frames = [media.save(frame, owner, f"f{i}") for i, frame in enumerate(task.video or [])]
        rows.append({"id": owner, "bucket": bucket, "mode": mode, "source": source, "prompt": task.prompt,
                     "answer": task.answer, "kind": task.kind, "steps": task.num_steps, "images": images,
                     "video": frames, "fps": task.fps if frames else None})
    return rows

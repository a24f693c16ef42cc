"""Prompt rows for RL and evaluation, and the deterministic sampler that draws them.

A row is `{"id", "prompt" | "messages", "answer", "mode", ...columns}`. Rows become `GenerationRequest`s for the
rollout workers and `Sample`s for the reward workers; every column travels with the sample, so a reward can read
any field of its row. The sampler's order depends only on (seed, step), so a resumed stage draws the same prompts
as a run that never stopped.
"""

from __future__ import annotations

import numpy as np

from keye_protocol.chat import parse_mode
from posttrain.data_files import read_jsonl
from rewards.sample import Sample
from rollout.types import Completion, GenerationRequest


def load_prompts(path, where: str = "") -> list[dict]:
    rows = read_jsonl(path)
    for line_no, row in enumerate(rows, start=1):
        if "prompt" not in row and "messages" not in row:
            raise ValueError(f"{path}:{line_no}: a prompt row needs 'prompt' or 'messages' (has {sorted(row)})")
        _check_prompt(row, f"{path}:{line_no}")
        _one_images_list(row, f"{path}:{line_no}")
        if row.get("mode") is not None:
            parse_mode(row["mode"])
        row.setdefault("id", f"{where}{line_no}")
    return rows


def _check_prompt(row: dict, where: str) -> None:
    """A prompt is text, a messages field is a list of {"role", "content"} objects: anything else (null, a
    number) would fail much later, inside a rollout worker, without naming the row."""
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m
                                                                      for m in messages):
            raise ValueError(f"{where}: 'messages' must be a non-empty list of {{\"role\": ..., \"content\": ...}} "
                             f"objects, got {type(messages).__name__}")
    elif not isinstance(row["prompt"], str) or not row["prompt"].strip():
        raise ValueError(f"{where}: 'prompt' must be non-empty text, got {row['prompt']!r:.80}")


def _one_images_list(row: dict, where: str) -> None:
    """`"image": "x.png"` is read as `"images": ["x.png"]`, not ignored; a bare string under `images` would be
    read letter by letter, and both keys at once leave it unclear which the user meant."""
    if "image" in row:
        if "images" in row:
            raise ValueError(f"{where}: give 'images' (a list of paths) or 'image' (one path), not both")
        row["images"] = [row.pop("image")]
    if "images" in row and not (isinstance(row["images"], list) and all(isinstance(p, str) for p in row["images"])):
        raise ValueError(f"{where}: 'images' must be a list of paths, got {row['images']!r:.80}")


def messages_of(row: dict) -> list[dict]:
    if "messages" in row:
        return row["messages"]
    images = [{"type": "image", "image": p} for p in row.get("images", [])]
    return [{"role": "user", "content": [*images, {"type": "text", "text": row["prompt"]}]}]


def request_of(row: dict, mode: str | None = None) -> GenerationRequest:
    return GenerationRequest(str(row["id"]), messages_of(row), mode or row.get("mode"))


def sample_of(row: dict, completion: Completion, group_index: int, group_size: int) -> Sample:
    return Sample(prompt=messages_of(row), completion=completion.text, completion_ids=completion.token_ids,
                  mode=row.get("mode"), ground_truth=row.get("answer"), images=list(completion.images),
                  columns=dict(row), group_index=group_index, group_size=group_size)


class PromptSampler:
    """Draws `count` rows for a step from a per-epoch permutation keyed by the seed."""

    def __init__(self, rows: list[dict], seed: int):
        self.rows, self.seed = rows, seed

    def draw(self, step: int, count: int, offset: int = 0) -> list[dict]:
        """Rows for `step`; `offset` continues the same step's stream (refills after dynamic-sampling drops)."""
        n = len(self.rows)
        first = step * count + offset
        out = []
        for position in range(first, first + count):
            epoch, index = divmod(position, n)
            order = np.random.default_rng(self.seed + epoch).permutation(n)
            out.append(self.rows[order[index]])
        return out

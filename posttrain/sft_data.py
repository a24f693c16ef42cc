"""Chat rows to `TrainBatch`es for supervised fine-tuning.

A row is `{"messages": [..., {"role": "assistant", "content": ...}], "mode": optional}`. The prompt (every
message before the last, with the mode suffix) is encoded exactly as the rollout engine encodes prompts, and the
assistant turn plus the model's end-of-turn token (`<|im_end|>` for Keye, the template's own for other models:
`PromptEncoder.end_of_turn`) is appended segment by segment, as the agentic loop appends: SFT trains on the very
token sequences that RL later samples. Loss falls on the assistant's own tokens only: sandbox outputs
(`<sandbox_output>...</sandbox_output>`, and any image inside them) are context, not targets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from keye_protocol.chat import SANDBOX_CLOSE, SANDBOX_OPEN, content_items
from posttrain.data_files import check_messages
from posttrain.learners.batch import TrainBatch
from rollout.encoding import EncodedPrompt, PromptEncoder
from rollout.types import GenerationRequest


@dataclass
class SftExample:
    prompt: EncodedPrompt  # the prompt with the whole response appended (its vision includes response images)
    prompt_len: int
    completion_ids: list[int]
    loss_mask: list[int]

    def __len__(self) -> int:
        return self.prompt_len + len(self.completion_ids)


def encode_sft_row(row: dict, encoder: PromptEncoder, where: str = "") -> SftExample:
    messages = row["messages"]
    check_messages(messages, where, "sft")
    prompt = encoder.encode(GenerationRequest(where, messages[:-1], row.get("mode")))
    start, ids, mask = len(prompt), [], []
    for piece, trained, images in _segments([*content_items(messages[-1]), {"type": "text", "text": encoder.end_of_turn}]):
        prompt, added = encoder.append(prompt, encoder.text_ids(piece) if piece else [], images)
        ids += added
        mask += [int(trained)] * len(added)
    return SftExample(prompt, start, ids, mask)


def _segments(items: list[dict]):
    """(text, trained, images) pieces of a response: sandbox outputs (tags, text, images) are not trained."""
    inside = False
    for item in items:
        if item["type"] == "image":
            yield "", False, [item["image"]]
            continue
        if item["type"] != "text":
            raise ValueError(f"assistant content of type {item['type']!r} is not supported in SFT rows")
        for part in re.split(f"({re.escape(SANDBOX_OPEN)}|{re.escape(SANDBOX_CLOSE)})", item["text"]):
            inside = inside or part == SANDBOX_OPEN
            if part:
                yield part, not inside, []
            inside = inside and part != SANDBOX_CLOSE


def sft_batch(examples: list[SftExample], pad_id: int) -> TrainBatch:
    """Right-padded batch with loss on the completion tokens."""
    longest = max(len(e) for e in examples)
    ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    loss = torch.zeros_like(ids)
    for row, e in enumerate(examples):
        sequence = e.prompt.input_ids
        ids[row, : len(sequence)] = torch.tensor(sequence)
        attention[row, : len(sequence)] = 1
        loss[row, e.prompt_len: len(sequence)] = torch.tensor(e.loss_mask)
    vision = {}
    for key in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
        parts = [e.prompt.vision[key] for e in examples if key in e.prompt.vision]
        if parts:
            vision[key] = torch.cat(parts)
    return TrainBatch(input_ids=ids, attention_mask=attention, loss_mask=loss, **vision)

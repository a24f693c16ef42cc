"""Prompts as token ids plus their vision tensors, and batching them with left padding.

An `EncodedPrompt` is the engine's unit of work. Keeping ids (not text) lets the agentic loop append sandbox
output and images to a partial response without re-tokenizing what the model already sampled, which could
merge tokens across the boundary and change the sequence the learner trains on.

Works with a Keye-VL processor (images, videos) or a plain tokenizer (text-only causal LMs). A plain tokenizer
renders prompts with its own chat template, message contents as plain strings (the form every text model's
template takes), and its assistant turns end with the template's own end-of-turn token (`end_of_turn`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from keye_protocol import chat
from keye_vl.image_processing import process_images
from keye_vl.processing import KeyeVLProcessor
from rollout.types import GenerationRequest

VISION_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


@dataclass
class EncodedPrompt:
    input_ids: list[int]
    vision: dict[str, torch.Tensor] = field(default_factory=dict)  # the VISION_KEYS present
    images: list[Any] = field(default_factory=list)  # raw images, prompt first, then sandbox ones

    def __len__(self) -> int:
        return len(self.input_ids)


class PromptEncoder:
    """Turns requests into `EncodedPrompt`s; raises ValueError/TypeError on input the processor rejects."""

    def __init__(self, processor_or_tokenizer):
        if isinstance(processor_or_tokenizer, KeyeVLProcessor):
            self.processor, self.tokenizer = processor_or_tokenizer, processor_or_tokenizer.tokenizer
        else:
            self.processor, self.tokenizer = None, processor_or_tokenizer
        self.processor_or_tokenizer = processor_or_tokenizer
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    @classmethod
    def from_model_dir(cls, path) -> "PromptEncoder":
        """The encoder of a model directory: its Keye processor if it has one, else its tokenizer."""
        from pathlib import Path

        from transformers import AutoTokenizer

        from keye_vl.processing import PREPROCESSOR_FILE

        path = Path(path)
        if (path / PREPROCESSOR_FILE).exists():
            return cls(KeyeVLProcessor.from_pretrained(path))
        return cls(AutoTokenizer.from_pretrained(str(path)))

    @property
    def eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids(self.end_of_turn)}
        return sorted(i for i in ids if i is not None and i != self.tokenizer.unk_token_id)

    @cached_property
    def end_of_turn(self) -> str:
        """The token that closes an assistant turn: `<|im_end|>` in Keye's (and Qwen's) chat format; for a
        tokenizer with a chat template of its own, the token that template writes after an assistant message
        (Llama 3's `<|eot_id|>`), else its eos token. SFT targets end with it; generation stops on it."""
        if self.processor is not None or not self.tokenizer.chat_template:
            if self._token_id(chat.IM_END) is None:
                raise ValueError(f"tokenizer {self._name} has no chat template and no {chat.IM_END} token, so "
                                 f"the toolkit's ChatML prompts cannot end a turn; give it a chat template "
                                 f"(`posttrain model import` keeps the source model's)")
            return chat.IM_END
        probe = "end-of-turn-probe"
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}], tokenize=False)
        after = rendered.split(probe, 1)[1].lstrip() if probe in rendered else ""
        ids = self.tokenizer.encode(after, add_special_tokens=False)[:1]
        first = self.tokenizer.convert_ids_to_tokens(ids[0]) if ids else None
        if first is not None and first in self.tokenizer.get_added_vocab():
            return first
        if self.tokenizer.eos_token is not None:
            return self.tokenizer.eos_token
        raise ValueError(f"tokenizer {self._name}: its chat template writes {after[:40]!r} after an assistant "
                         f"message, not a token of its own, and it has no eos_token; set `eos_token` in its "
                         f"tokenizer_config.json to the token that ends the model's turns")

    @property
    def _name(self) -> str:
        return repr(getattr(self.tokenizer, "name_or_path", "") or type(self.tokenizer).__name__)

    def _token_id(self, token: str) -> int | None:
        i = self.tokenizer.convert_tokens_to_ids(token)
        return None if i is None or i == self.tokenizer.unk_token_id else i

    @property
    def vision_ids(self) -> list[int]:
        """Placeholder tokens the model must never write itself (only the processor places them)."""
        tokens = (chat.VISION_START, chat.VISION_END, chat.IMAGE_PAD, chat.VIDEO_PAD, "<|vision_pad|>")
        ids = {self.tokenizer.convert_tokens_to_ids(t) for t in tokens}
        return sorted(i for i in ids if i is not None and i != self.tokenizer.unk_token_id)

    def encode(self, request: GenerationRequest, continue_final_message: bool = False) -> EncodedPrompt:
        if self.processor is None:
            return self._encode_text(request, continue_final_message)
        batch = self.processor.process_conversations([request.messages], request.mode,
                                                     continue_final_message=continue_final_message)
        images, _ = chat.vision_inputs(request.messages)
        vision = {k: batch[k] for k in VISION_KEYS if k in batch}
        return EncodedPrompt(batch["input_ids"][0].tolist(), vision, list(images))

    def _encode_text(self, request: GenerationRequest, continue_final_message: bool) -> EncodedPrompt:
        images, videos = chat.vision_inputs(request.messages)
        if images or videos:
            raise ValueError(f"request {request.request_id} has images or videos but the model is text-only")
        messages = chat.with_mode(request.messages, request.mode) if request.mode else request.messages
        if self.tokenizer.chat_template:
            messages = [_plain_text(m) for m in messages]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=not
                                                      continue_final_message,
                                                      continue_final_message=continue_final_message)
        else:
            text = chat.render_chat(messages, None, True, continue_final_message)
        return EncodedPrompt(self.tokenizer.encode(text, add_special_tokens=False))

    def completion_text(self, ids: list[int]) -> str:
        """A completion's text without its closing end-of-turn token (as vLLM reports it): rewards and parsers
        see the answer, not the chat markup. The token itself stays in the ids the learner trains on."""
        if ids and ids[-1] in self.eos_ids:
            ids = ids[:-1]
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def text_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def append(self, prompt: EncodedPrompt, ids: list[int], images: list[Any] = ()) -> tuple[EncodedPrompt, list[int]]:
        """`prompt` followed by `ids` and then one vision block per image; returns it and the added ids."""
        added = list(ids)
        vision = dict(prompt.vision)
        if images:
            if self.processor is None:
                raise ValueError("the sandbox returned an image but the model is text-only")
            data = process_images(list(images), self.processor.vision)
            tok = self.tokenizer.convert_tokens_to_ids
            for n in data.tokens_per_item:
                added += [tok(chat.VISION_START)] + [tok(chat.IMAGE_PAD)] * n + [tok(chat.VISION_END)]
            for key, value in (("pixel_values", data.pixel_values), ("image_grid_thw", data.grid_thw)):
                vision[key] = torch.cat([vision[key], value]) if key in vision else value
        return EncodedPrompt(prompt.input_ids + added, vision, prompt.images + list(images)), added


def _plain_text(message: dict) -> dict:
    """A message whose content is text items only, with that content as one string: text models' chat templates
    concatenate `message['content']`, and a list there would be rendered as its Python repr."""
    items = message.get("content")
    if isinstance(items, list) and all(isinstance(i, dict) and i.get("type") == "text" for i in items):
        return {**message, "content": "".join(i.get("text", "") for i in items)}
    return message


def collate(prompts: list[EncodedPrompt], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded input_ids/attention_mask and the concatenated vision tensors, in prompt order."""
    longest = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, longest - len(prompt):] = torch.tensor(prompt.input_ids)
        mask[row, longest - len(prompt):] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask}
    for key in VISION_KEYS:
        parts = [p.vision[key] for p in prompts if key in p.vision]
        if parts:
            batch[key] = torch.cat(parts)
    return batch

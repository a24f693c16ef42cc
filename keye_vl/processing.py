"""KeyeVLProcessor: conversations (text, images, videos) to model inputs.

Renders the chat with `keye_vl.chat`, turns images/videos into patches with `keye_vl.image_processing`,
expands each `<|image_pad|>` / `<|video_pad|>` placeholder to the t*h*w/4 tokens its item needs, and tokenizes
with left padding (what batched generation wants). The counts are checked here, so a mismatch between
placeholders and images is reported with both numbers before any model code runs.

Saved as a tokenizer plus `preprocessor_config.json`; `from_pretrained` also reads the public Keye-VL
preprocessor file (keys it does not use are ignored).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import BatchFeature, PreTrainedTokenizerBase

from keye_vl import chat
from keye_vl.image_processing import PatchedVision, VisionProcessingConfig, process_images, process_videos
from keye_vl.tokenizer import load_tokenizer

PREPROCESSOR_FILE = "preprocessor_config.json"


class KeyeVLProcessor:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, vision: VisionProcessingConfig | None = None):
        self.tokenizer = tokenizer
        self.vision = vision or VisionProcessingConfig()
        if not tokenizer.chat_template:
            tokenizer.chat_template = chat.CHAT_TEMPLATE

    # ------------------------------------------------------------------------------------------ files
    @classmethod
    def from_pretrained(cls, path: str | Path) -> "KeyeVLProcessor":
        path = Path(path)
        config_file = path / PREPROCESSOR_FILE
        vision = VisionProcessingConfig(**json.loads(config_file.read_text())) if config_file.exists() else None
        return cls(load_tokenizer(str(path)), vision)

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(path))
        config = {"processor_class": type(self).__name__, **self.vision.model_dump()}
        (path / PREPROCESSOR_FILE).write_text(json.dumps(config, indent=2) + "\n")

    # ------------------------------------------------------------------------------------------ text
    def apply_chat_template(self, messages: list[dict], mode: str | chat.Mode | None = None,
                            add_generation_prompt: bool = True, continue_final_message: bool = False) -> str:
        return chat.render_chat(messages, mode, add_generation_prompt, continue_final_message)

    def decode(self, ids, **kwargs) -> str:
        return self.tokenizer.decode(ids, **kwargs)

    def batch_decode(self, ids, **kwargs) -> list[str]:
        return self.tokenizer.batch_decode(ids, **kwargs)

    # ------------------------------------------------------------------------------------------ inputs
    def __call__(self, text: str | list[str], images: list[Any] | None = None, videos: list[Any] | None = None,
                 padding_side: str = "left", return_tensors: str = "pt") -> BatchFeature:
        """`text` holds one `<|image_pad|>` / `<|video_pad|>` placeholder per item (as `render_chat` writes);
        `images` and `videos` are all items of the batch, in the order their placeholders appear."""
        texts = [text] if isinstance(text, str) else list(text)
        image_data = process_images(images, self.vision) if images else None
        video_data = process_videos(videos, self.vision) if videos else None
        texts = self._expand(texts, chat.IMAGE_PAD, image_data, "image")
        texts = self._expand(texts, chat.VIDEO_PAD, video_data, "video")
        self.tokenizer.padding_side = padding_side
        encoded = self.tokenizer(texts, padding=True, return_tensors=return_tensors, add_special_tokens=False)
        data = dict(encoded)
        if image_data is not None:
            data.update(pixel_values=image_data.pixel_values, image_grid_thw=image_data.grid_thw)
        if video_data is not None:
            data.update(pixel_values_videos=video_data.pixel_values, video_grid_thw=video_data.grid_thw,
                        second_per_grid_ts=torch.tensor(video_data.second_per_grid))
        return BatchFeature(data=data)

    def process_conversations(self, conversations: list[list[dict]], mode: str | chat.Mode | None = None,
                              add_generation_prompt: bool = True, continue_final_message: bool = False,
                              padding_side: str = "left") -> BatchFeature:
        """Render and encode a batch of conversations, collecting their images and videos in order."""
        texts, images, videos = [], [], []
        for messages in conversations:
            texts.append(self.apply_chat_template(messages, mode, add_generation_prompt, continue_final_message))
            item_images, item_videos = chat.vision_inputs(messages)
            images += item_images
            videos += item_videos
        return self(texts, images or None, videos or None, padding_side=padding_side)

    @staticmethod
    def _expand(texts: list[str], placeholder: str, data: PatchedVision | None, kind: str) -> list[str]:
        found = sum(t.count(placeholder) for t in texts)
        given = 0 if data is None else len(data.tokens_per_item)
        if found != given:
            raise ValueError(f"the text has {found} {placeholder} placeholders but {given} {kind}s were given; "
                             f"put exactly one placeholder per {kind} (content items of type '{kind}' in the "
                             f"messages do this), in the order the {kind}s are passed")
        if data is None:
            return texts
        counts = iter(data.tokens_per_item)
        expanded = []
        for text in texts:
            pieces = text.split(placeholder)
            out = pieces[0]
            for piece in pieces[1:]:
                out += placeholder * next(counts) + piece
            expanded.append(out)
        return expanded

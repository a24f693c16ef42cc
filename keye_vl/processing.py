"""KeyeVLProcessor: conversations (text, images, videos) to model inputs, as a transformers `ProcessorMixin`.

Renders the chat with `keye_protocol.chat` (or the saved Jinja template through transformers' standard
`apply_chat_template`), turns images/videos into patches with `KeyeImageProcessor`, expands each
`<|image_pad|>` / `<|video_pad|>` placeholder to the t*h*w/4 tokens its item needs, and tokenizes with left
padding (what batched generation wants). The counts are checked here, so a mismatch between placeholders and
images is reported with both numbers before any model code runs.

Saved as tokenizer files, `preprocessor_config.json` (the image processor), `chat_template.jinja` and
`processor_config.json`; `from_pretrained` also reads the public Keye-VL preprocessor file. `AutoProcessor`
resolves it once `keye_vl` is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import BatchFeature, PreTrainedTokenizerBase, ProcessorMixin

from keye_protocol import chat
from keye_vl.image_processing import KeyeImageProcessor, VisionProcessingConfig, tokens_per_item
from keye_vl.tokenizer import load_tokenizer

CHAT_TEMPLATE_FILE = "chat_template.jinja"
PREPROCESSOR_FILE = "preprocessor_config.json"  # the image processor's settings; its presence marks a Keye dir
# Tokenizer options a caller may pass through `__call__` / `apply_chat_template`.
# Hub options that AutoProcessor.from_pretrained forwards.
HUB_OPTIONS = ("_from_auto", "trust_remote_code", "revision", "cache_dir", "force_download", "proxies", "token",
               "local_files_only", "subfolder", "_from_pipeline")
TEXT_OPTIONS = {"padding", "padding_side", "truncation", "max_length", "add_special_tokens", "return_attention_mask"}


class KeyeVLProcessor(ProcessorMixin):
    image_token = chat.IMAGE_PAD
    video_token = chat.VIDEO_PAD

    def __init__(self, image_processor: KeyeImageProcessor | None = None,
                 tokenizer: PreTrainedTokenizerBase | None = None, chat_template: str | None = None):
        if tokenizer is None:
            raise ValueError("KeyeVLProcessor needs a tokenizer (keye_vl.tokenizer.load_tokenizer(dir))")
        image_processor = image_processor or KeyeImageProcessor()
        if not tokenizer.chat_template:
            tokenizer.chat_template = chat.CHAT_TEMPLATE
        super().__init__(image_processor, tokenizer, chat_template=chat_template or chat.CHAT_TEMPLATE)

    @classmethod
    def build(cls, tokenizer: PreTrainedTokenizerBase, vision: VisionProcessingConfig | None = None):
        """A processor from a tokenizer and pixel budgets (a preset's, `keye_vl.presets.preset_processing`)."""
        return cls(KeyeImageProcessor(**(vision or VisionProcessingConfig()).model_dump()), tokenizer)

    @property
    def vision(self) -> VisionProcessingConfig:
        return self.image_processor.vision

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.image_token)

    @property
    def video_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.video_token)

    # ------------------------------------------------------------------------------------------ files
    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> "KeyeVLProcessor":
        """Read a processor directory. The image processor is always Keye's: the public preprocessor file names
        `SiglipImageProcessor`, which would resize to a fixed square. `tokenizer=` replaces the directory's
        (vLLM passes its own); `min_pixels` / `max_pixels` override the pixel budget."""
        path = Path(path)
        tokenizer = kwargs.pop("tokenizer", None)  # vLLM passes the tokenizer it loaded itself
        options = {k: kwargs.pop(k) for k in ("min_pixels", "max_pixels") if k in kwargs}
        for key in HUB_OPTIONS:  # what AutoProcessor forwards; a local directory needs none of it
            kwargs.pop(key, None)
        if kwargs:
            raise TypeError(f"KeyeVLProcessor.from_pretrained got unsupported arguments {sorted(kwargs)}")
        has_image_config = (path / PREPROCESSOR_FILE).exists()
        image_processor = (KeyeImageProcessor.from_pretrained(str(path), **options) if has_image_config
                           else KeyeImageProcessor(**options))
        template_file = path / CHAT_TEMPLATE_FILE
        template = template_file.read_text() if template_file.exists() else None
        return cls(image_processor, tokenizer or load_tokenizer(str(path)), chat_template=template)

    def save_pretrained(self, path: str | Path, **kwargs) -> list[str]:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(path))
        self.image_processor.save_pretrained(str(path))
        (path / CHAT_TEMPLATE_FILE).write_text(self.chat_template)
        (path / "processor_config.json").write_text(f'{{\n  "processor_class": "{type(self).__name__}"\n}}\n')
        return [str(path / name) for name in (PREPROCESSOR_FILE, CHAT_TEMPLATE_FILE,
                                               "processor_config.json")]

    # ------------------------------------------------------------------------------------------ text
    def apply_chat_template(self, conversation: list[dict] | list[list[dict]], chat_template: str | None = None,
                            mode: str | chat.Mode | None = None, **kwargs):
        """transformers' multimodal `apply_chat_template` (tokenize, return_dict, images and videos inside the
        messages), plus `mode`: the suffix (`/think`, `/no_think`, ...) the last user turn gets."""
        if mode is not None:
            batched = bool(conversation) and isinstance(conversation[0], list)
            conversation = ([chat.with_mode(c, mode) for c in conversation] if batched
                            else chat.with_mode(conversation, mode))
        return super().apply_chat_template(conversation, chat_template, **kwargs)

    def decode(self, ids, **kwargs) -> str:
        return self.tokenizer.decode(ids, **kwargs)

    def batch_decode(self, ids, **kwargs) -> list[str]:
        return self.tokenizer.batch_decode(ids, **kwargs)

    # ------------------------------------------------------------------------------------------ inputs
    def __call__(self, text: str | list[str] | None = None, images: list[Any] | None = None,
                 videos: list[Any] | None = None, padding_side: str = "left", return_tensors: str | None = "pt",
                 **options) -> BatchFeature:
        """`text` holds one `<|image_pad|>` / `<|video_pad|>` placeholder per item (as `render_chat` writes);
        `images` and `videos` are all items of the batch, in the order their placeholders appear (a list per
        text, as transformers' `apply_chat_template` passes them, is flattened)."""
        if options.pop("audio", None) is not None:
            raise ValueError("Keye-VL takes text, images and videos; it has no audio input")
        unknown = set(options) - TEXT_OPTIONS - {"sanitize_control_tokens"}
        if unknown:
            raise TypeError(f"KeyeVLProcessor got unsupported arguments {sorted(unknown)}; it takes text, images, "
                            f"videos, padding_side, return_tensors and tokenizer options {sorted(TEXT_OPTIONS)}")
        options.pop("sanitize_control_tokens", None)
        if text is None:
            raise ValueError("KeyeVLProcessor needs `text` with one placeholder per image or video")
        texts = [text] if isinstance(text, str) else list(text)
        vision = self.image_processor.preprocess(_flat(images, _is_nested), _flat(videos, _is_video_list),
                                                 return_tensors)
        texts = self._expand(texts, chat.IMAGE_PAD, vision.get("image_grid_thw"), "image")
        texts = self._expand(texts, chat.VIDEO_PAD, vision.get("video_grid_thw"), "video")
        options = {"padding": True, "add_special_tokens": False, **options}
        self.tokenizer.padding_side = padding_side
        encoded = self.tokenizer(texts, return_tensors=return_tensors, **options)
        return BatchFeature(data={**encoded, **vision})

    def process_conversations(self, conversations: list[list[dict]], mode: str | chat.Mode | None = None,
                              add_generation_prompt: bool = True, continue_final_message: bool = False,
                              padding_side: str = "left") -> BatchFeature:
        """Render and encode a batch of conversations, collecting their images and videos in order (the fast
        path the toolkit uses: no Jinja, no image loading from URLs)."""
        texts, images, videos = [], [], []
        for messages in conversations:
            texts.append(chat.render_chat(messages, mode, add_generation_prompt, continue_final_message))
            item_images, item_videos = chat.vision_inputs(messages)
            images += item_images
            videos += item_videos
        return self(texts, images or None, videos or None, padding_side=padding_side)

    @staticmethod
    def _expand(texts: list[str], placeholder: str, grids: torch.Tensor | None, kind: str) -> list[str]:
        counts = [] if grids is None else tokens_per_item(grids)
        found = sum(t.count(placeholder) for t in texts)
        if found != len(counts):
            raise ValueError(f"the text has {found} {placeholder} placeholders but {len(counts)} {kind}s were "
                             f"given; put exactly one placeholder per {kind} (content items of type '{kind}' in the "
                             f"messages do this), in the order the {kind}s are passed")
        remaining = iter(counts)
        expanded = []
        for text in texts:
            pieces = text.split(placeholder)
            expanded.append(pieces[0] + "".join(placeholder * next(remaining) + piece for piece in pieces[1:]))
        return expanded


def _flat(items: list[Any] | None, is_group) -> list[Any] | None:
    """transformers passes one list of items per conversation; the processor wants them all, in order."""
    if not items:
        return None
    flat = []
    for item in items:
        flat.extend(item if is_group(item) else [item])
    return flat or None


def _is_nested(item: Any) -> bool:
    return isinstance(item, list)


def _is_video_list(item: Any) -> bool:
    """A list of videos, not one video given as a plain list of frames."""
    if not isinstance(item, list):
        return False
    first = item[0] if item else None
    return not item or isinstance(first, (dict, list)) or getattr(first, "ndim", 0) == 4

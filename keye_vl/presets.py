"""Named model sizes.

- `keye-vl-8b`: the public Keye-VL-8B-Preview (Qwen3-8B decoder, SigLIP-so400m encoder), exact numbers of KEYE.md.
- `keye-tiny`: the same architecture small enough to train in minutes on two CPU cores. head_dim is 32 so a
  vLLM build can serve it too; its token ids are those of the tiny tokenizer (`keye_vl.tokenizer`).
"""

from __future__ import annotations

from keye_vl.configuration import KeyeVLConfig
from keye_vl.image_processing import VisionProcessingConfig
from keye_vl.tokenizer import TINY_IDS, TINY_VOCAB_SIZE, REASONING_TAGS


def _keye_vl_8b() -> KeyeVLConfig:
    return KeyeVLConfig(vision_config={}, text_config={})  # the defaults are the 8B numbers


def _keye_tiny() -> KeyeVLConfig:
    return KeyeVLConfig(
        vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                           image_size=224, patch_size=14),
        text_config=dict(
            vocab_size=TINY_VOCAB_SIZE + len(REASONING_TAGS),
            hidden_size=128, intermediate_size=384, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32,
            max_position_embeddings=8192, max_window_layers=4,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
            bos_token_id=TINY_IDS["<|endoftext|>"], eos_token_id=TINY_IDS["<|im_end|>"],
            pad_token_id=TINY_IDS["<|endoftext|>"],
        ),
        vision_start_token_id=TINY_IDS["<|vision_start|>"],
        vision_end_token_id=TINY_IDS["<|vision_end|>"],
        vision_token_id=TINY_IDS["<|vision_pad|>"],
        image_token_id=TINY_IDS["<|image_pad|>"],
        video_token_id=TINY_IDS["<|video_pad|>"],
    )


PRESETS = {"keye-vl-8b": _keye_vl_8b, "keye-tiny": _keye_tiny}


def preset_config(name: str) -> KeyeVLConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available presets: {sorted(PRESETS)}")
    return PRESETS[name]()


# Pixel/token budgets per preset. The tiny one keeps images at <= 64 tokens and videos at <= 128 so that
# rollouts with vision stay cheap on two CPU cores.
PROCESSING = {
    "keye-vl-8b": VisionProcessingConfig(),
    "keye-tiny": VisionProcessingConfig(
        min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28, video_min_frames=2, video_max_frames=8,
        video_min_tokens_per_frame=4, video_max_tokens_per_frame=16, video_max_tokens=128,
    ),
}


def preset_processing(name: str) -> VisionProcessingConfig:
    if name not in PROCESSING:
        raise ValueError(f"unknown preset {name!r}; available presets: {sorted(PROCESSING)}")
    return PROCESSING[name].model_copy()

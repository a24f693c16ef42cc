"""Model directories and weights: create a complete tiny model, count parameters by part, and start the
vision tower from a transformers SigLIP checkpoint (the stage-0 starting point)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from keye_vl.configuration import KeyeVLConfig
from keye_vl.modeling import KeyeForConditionalGeneration
from keye_vl.presets import preset_processing
from keye_vl.processing import KeyeVLProcessor
from keye_vl.tokenizer import build_tiny_tokenizer, load_tokenizer

PARTS = ("visual", "mlp_AR", "model", "lm_head")
MAX_INIT_PARAMETERS = 2_000_000_000  # above this, random weights on a CPU box are neither useful nor affordable


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters per top-level part (`visual`, `mlp_AR`, `model`, `lm_head`) plus `total`."""
    counts = {part: 0 for part in PARTS}
    for name, param in model.named_parameters():
        part = name.split(".", 1)[0]
        counts[part] = counts.get(part, 0) + param.numel()
    counts["total"] = sum(counts.values())
    return counts


def count_preset_parameters(config: KeyeVLConfig) -> dict[str, int]:
    """Parameter counts of a config without allocating its weights (built on the meta device)."""
    with torch.device("meta"):
        return parameter_counts(KeyeForConditionalGeneration(config))


def init_vision_from_siglip(model: KeyeForConditionalGeneration, siglip: str | Path | nn.Module) -> list[str]:
    """Copy a transformers `SiglipVisionModel` (directory or module) into `model.visual`.

    The pooling head is dropped (Keye never reads it). The position table is copied as is: Keye interpolates it
    to each image's grid at run time. Returns the names that were loaded.
    """
    if not isinstance(siglip, nn.Module):
        from transformers import SiglipVisionModel

        siglip = SiglipVisionModel.from_pretrained(str(siglip))
    source = {k.removeprefix("vision_model."): v for k, v in siglip.state_dict().items()}
    source = {k: v for k, v in source.items() if not k.startswith("head.")}
    target = {k: v for k, v in model.visual.vision_model.state_dict().items() if "packing_position" not in k}
    wrong = {k: (tuple(v.shape), tuple(target[k].shape)) for k, v in source.items()
             if k in target and v.shape != target[k].shape}
    missing = sorted(set(target) - set(source))
    if wrong or missing:
        raise ValueError(f"the SigLIP checkpoint does not fit this vision config: shape mismatches "
                         f"(checkpoint, model) {wrong}, missing {missing[:5]}; build the model with the SigLIP "
                         f"config's hidden_size, intermediate_size, num_hidden_layers, heads, image and patch size")
    model.visual.vision_model.load_state_dict({k: source[k] for k in target}, strict=False)  # the packing table
    # is Keye's own (never read), SigLIP has none
    return sorted(target)


def init_model_dir(out: str | Path, preset: str = "keye-tiny", tokenizer: str | None = None,
                   siglip: str | None = None, seed: int = 0) -> dict[str, int]:
    """Write a complete Hugging Face model directory (config, weights, tokenizer, processor).

    Tiny presets get the offline-trained tokenizer; large presets need the public tokenizer files and, since
    random 8B weights are of no use, get config, tokenizer and processor only (load the public weights).
    """
    out = Path(out)
    config = KeyeVLConfig.from_preset(preset)
    counts = count_preset_parameters(config)
    if tokenizer is None and preset != "keye-tiny":
        raise ValueError(f"preset {preset} uses the public Keye-VL tokenizer: pass --tokenizer DIR with its files")
    tok = load_tokenizer(tokenizer) if tokenizer else build_tiny_tokenizer()
    processor = KeyeVLProcessor.build(tok, preset_processing(preset))
    check_token_ids(config, processor)
    out.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(out)
    if counts["total"] > MAX_INIT_PARAMETERS:
        config.save_pretrained(out)
        return counts
    torch.manual_seed(seed)
    model = KeyeForConditionalGeneration(config)
    if siglip:
        init_vision_from_siglip(model, siglip)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.save_pretrained(out)
    return counts


def check_token_ids(config: KeyeVLConfig, processor: KeyeVLProcessor) -> None:
    """The config's vision and end-of-turn ids must be the tokenizer's, or images land in the wrong slots."""
    tok = processor.tokenizer
    expected = {
        "<|image_pad|>": config.image_token_id, "<|video_pad|>": config.video_token_id,
        "<|vision_start|>": config.vision_start_token_id, "<|vision_end|>": config.vision_end_token_id,
        "<|im_end|>": config.text_config.eos_token_id,
    }
    wrong = {t: (i, tok.convert_tokens_to_ids(t)) for t, i in expected.items() if tok.convert_tokens_to_ids(t) != i}
    if wrong:
        raise ValueError(f"token ids differ between config and tokenizer (config, tokenizer): {wrong}; use the "
                         f"tokenizer that belongs to this preset")
    if len(tok) > config.text_config.vocab_size:
        raise ValueError(f"tokenizer has {len(tok)} tokens but the model's vocab_size is "
                         f"{config.text_config.vocab_size}")


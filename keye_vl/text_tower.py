"""The SigLIP towers of pre-training stage 0: an image embedding from Keye's vision tower, a text tower, and the
learnable logit scale and bias of the sigmoid loss (Zhai et al. 2023).

- Image embedding: transformers' `SiglipMultiheadAttentionPoolingHead` (the module the public checkpoint carries,
  unused, as `visual.vision_model.head.*`), applied to each image's own segment of the packed per-patch features.
  Segments of equal length are pooled in one batched call, so no padding and no mask is involved.
- Text tower: transformers' `SiglipTextModel` with a small `SiglipTextConfig` and the Keye model's own tokenizer.
  As SigLIP does, every caption is padded/truncated to a fixed length (`max_position_embeddings`), no attention
  mask is used, and the embedding is the last position's state through the tower's linear head.
- `logit_scale` (t', init log 10) and `logit_bias` (b, init -10), as transformers' `SiglipModel` names them.

Why not open_clip: its SigLIP models bundle their own fixed-resolution ViT (absolute positions, no 2-D RoPE, no
packing), while stage 0 exists to adapt *Keye's* vision tower; only its loss would be reused, and open_clip_torch
pulls in torchvision and timm, which do not match the CPU torch build (DESIGN.md). transformers' SigLIP modules are
already a dependency and are exactly the layout of the public checkpoint's pooling head. The multi-rank loss lives
in `posttrain.losses.siglip`.

Boundary: modules, tokenisation and files; nothing here knows about optimisers, ranks or recipes. The stage
output is read back by `ImageTextScorer` (the image-text score filter of `pretrain_data`).
"""

from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import SiglipTextConfig, SiglipTextModel, SiglipVisionConfig
from transformers.models.siglip.modeling_siglip import SiglipMultiheadAttentionPoolingHead

from keye_vl.configuration import KeyeVisionConfig, KeyeVLConfig
from keye_vl.vision import KeyeVisionModel, segment_lengths
from keye_vl.weight_files import copy_with_replaced, load_prefixed

TOWERS_FORMAT = "keye-siglip-towers"
# SiglipTextConfig fields a recipe may set; the rest follow from the tokenizer and the vision tower.
TEXT_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "max_position_embeddings", "hidden_act", "layer_norm_eps", "attention_dropout")
HEAD_PREFIX = "visual.vision_model.head."  # where the public checkpoint keeps the pooling head


def text_tower_config(vision: KeyeVisionConfig, tokenizer, overrides: dict | None = None) -> SiglipTextConfig:
    """A text tower as wide as the vision tower unless `overrides` say otherwise (SigLIP pairs towers of one
    width: so400m's text tower is 27 x 1152, like its image tower). The caption length defaults to SigLIP's 64."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(TEXT_FIELDS))
    if unknown:
        raise ValueError(f"text_tower keys {unknown} are not settable; use {list(TEXT_FIELDS)} (vocab_size, token "
                         f"ids and projection_size follow from the tokenizer and the vision tower)")
    fields = dict(hidden_size=vision.hidden_size, intermediate_size=vision.intermediate_size,
                  num_hidden_layers=vision.num_hidden_layers, num_attention_heads=vision.num_attention_heads,
                  max_position_embeddings=64, hidden_act=vision.hidden_act, layer_norm_eps=vision.layer_norm_eps)
    fields.update(overrides)
    if fields["hidden_size"] % fields["num_attention_heads"]:
        raise ValueError(f"text_tower hidden_size {fields['hidden_size']} is not divisible by num_attention_heads "
                         f"{fields['num_attention_heads']}")
    return SiglipTextConfig(**fields, vocab_size=len(tokenizer), projection_size=vision.hidden_size,
                            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id)


def encode_texts(tokenizer, texts: list[str], length: int) -> torch.Tensor:
    """[M, length] ids: each text's tokens, truncated to length - 1, then EOS, then padding (SigLIP's layout)."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    rows = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:length - 1] + [eos]
        rows.append(ids + [pad] * (length - len(ids)))
    return torch.tensor(rows, dtype=torch.long)


def pooling_head_config(vision: KeyeVisionConfig) -> SiglipVisionConfig:
    return SiglipVisionConfig(hidden_size=vision.hidden_size, intermediate_size=vision.intermediate_size,
                              num_attention_heads=vision.num_attention_heads, layer_norm_eps=vision.layer_norm_eps,
                              hidden_act=vision.hidden_act)


class SiglipTowers(nn.Module):
    """Pooling head + text tower + logit scale and bias: everything stage 0 trains besides the vision tower."""

    def __init__(self, vision: KeyeVisionConfig, text_config: SiglipTextConfig):
        super().__init__()
        if text_config.projection_size != vision.hidden_size:
            raise ValueError(f"text projection_size {text_config.projection_size} must equal the vision width "
                             f"{vision.hidden_size}: both embeddings meet in one space")
        self.vision = vision
        self.head = SiglipMultiheadAttentionPoolingHead(pooling_head_config(vision))
        self.text_model = SiglipTextModel(text_config)
        # t' (the temperature is exp(t')) and b; shape [1] as transformers' SiglipModel (DeepSpeed's broadcast
        # refuses 0-d parameters)
        self.logit_scale = nn.Parameter(torch.tensor([math.log(10.0)]))
        self.logit_bias = nn.Parameter(torch.tensor([-10.0]))

    @property
    def text_length(self) -> int:
        return self.text_model.config.max_position_embeddings

    def image_embeds(self, features: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """features: [N, D] packed per-patch outputs of the vision tower; grid_thw: [M, 3] -> [M, D]."""
        segments = features.split(segment_lengths(grid_thw))
        by_length: dict[int, list[int]] = defaultdict(list)
        for i, segment in enumerate(segments):
            by_length[segment.shape[0]].append(i)
        pooled: list[torch.Tensor | None] = [None] * len(segments)
        for indices in by_length.values():
            out = self.head(torch.stack([segments[i] for i in indices]))  # [k, D]
            for i, row in zip(indices, out):
                pooled[i] = row
        return torch.stack(pooled)

    def text_embeds(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: [M, text_length] from `encode_texts` -> [M, D]."""
        return self.text_model(input_ids=input_ids).pooler_output

    def logits(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """[Mi, D], [Mt, D] -> [Mi, Mt] = t * cos(x_i, y_j) + b."""
        x, y = F.normalize(image_embeds, dim=-1), F.normalize(text_embeds, dim=-1)
        return self.logit_scale.exp() * x @ y.T + self.logit_bias

    def load_public_head(self, model_dir: str | Path) -> bool:
        """Start the pooling head from the model directory's `visual.vision_model.head.*` when it has one (the
        public Keye/SigLIP checkpoints do; tiny models do not). Returns whether it did."""
        state = load_prefixed(model_dir, HEAD_PREFIX)
        if state:
            self.head.load_state_dict(state)
        return bool(state)

    def save(self, out: str | Path) -> None:
        write_towers(out, self.state_dict(), self.vision, self.text_model.config)

    @classmethod
    def load(cls, directory: str | Path) -> SiglipTowers:
        directory = Path(directory)
        path = directory / "config.json"
        config = json.loads(path.read_text()) if path.is_file() else {}
        if config.get("format") != TOWERS_FORMAT:
            raise FileNotFoundError(f"{path} is not a SigLIP towers config (format {TOWERS_FORMAT!r}); give the "
                                    f"`siglip/` directory a stage-0 (`kind: siglip`) stage wrote")
        towers = cls(KeyeVisionConfig(**config["vision_config"]), SiglipTextConfig(**config["text_config"]))
        towers.load_state_dict(load_file(str(directory / "model.safetensors")))
        return towers


def write_towers(out: str | Path, state: dict[str, torch.Tensor], vision: KeyeVisionConfig,
                 text_config: SiglipTextConfig) -> None:
    """`out/config.json` + `out/model.safetensors` of the towers (`state`: SiglipTowers' state dict)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = {"format": TOWERS_FORMAT, "text_config": text_config.to_dict(), "vision_config": vision.to_dict()}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()},
              str(out / "model.safetensors"), metadata={"format": "pt"})


def load_visual(model_dir: str | Path) -> KeyeVisionModel:
    """Only the vision tower of a Keye model directory (no decoder is built or read)."""
    config = KeyeVLConfig.from_pretrained(str(model_dir)).vision_config
    visual = KeyeVisionModel(config)
    state = {k: v for k, v in load_prefixed(model_dir, "visual.").items() if not k.startswith("vision_model.head.")}
    missing, unexpected = visual.load_state_dict(state, strict=False)
    missing = [k for k in missing if "packing_position_embedding" not in k]  # optional in checkpoints (KEYE.md)
    if missing or unexpected:
        raise ValueError(f"{model_dir}: the vision weights do not fit its config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return visual.float()


class KeyeSiglip(nn.Module):
    """What stage 0 trains: Keye's vision tower (`visual`, the public names) and the SigLIP towers (`towers`)."""

    def __init__(self, visual: KeyeVisionModel, towers: SiglipTowers, source_dir: str | Path | None = None):
        super().__init__()
        self.visual, self.towers = visual, towers
        self.source_dir = Path(source_dir) if source_dir else None  # the Keye model directory it started from

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, tokenizer, text_overrides: dict | None = None) -> KeyeSiglip:
        visual = load_visual(model_dir)
        towers = SiglipTowers(visual.vision_model.config, text_tower_config(visual.vision_model.config, tokenizer,
                                                                            text_overrides))
        towers.load_public_head(model_dir)
        return cls(visual, towers, model_dir)

    def forward(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor, input_ids: torch.Tensor):
        """[N, 3, 14, 14] patches of M images, [M, 3] grids, [M, L] caption ids -> ([M, D], [M, D]) embeddings."""
        features = self.visual(pixel_values, image_grid_thw)
        return self.towers.image_embeds(features, image_grid_thw), self.towers.text_embeds(input_ids)

    def save_pretrained(self, out: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """`out`: the source Keye directory with `visual.*` replaced (all else bit-identical); `out/siglip`: the
        towers. Named and shaped like `PreTrainedModel.save_pretrained`, so learner checkpoints can call it."""
        if self.source_dir is None:
            raise ValueError("KeyeSiglip.save_pretrained needs the Keye model directory it started from "
                             "(build it with KeyeSiglip.from_model_dir)")
        state = state_dict if state_dict is not None else self.state_dict()
        visual = {f"visual.{k[len('visual.'):]}": v for k, v in state.items() if k.startswith("visual.")
                  and "packing_position_embedding" not in k}  # the packing table is never trained
        copy_with_replaced(self.source_dir, out, visual)
        towers = {k[len("towers."):]: v for k, v in state.items() if k.startswith("towers.")}
        write_towers(Path(out) / "siglip", towers, self.towers.vision, self.towers.text_model.config)
        for item in self.source_dir.glob("*"):  # the tokenizer, so the towers directory reads captions alone
            if item.is_file() and (item.name.startswith("tokenizer") or item.name == "special_tokens_map.json"):
                shutil.copy2(item, Path(out) / "siglip" / item.name)


class ImageTextScorer:
    """Image-text scores from a stage-0 output: `score(images, texts)` is the probability SigLIP gives each pair.

    >>> scorer = ImageTextScorer.load("runs/x/00-siglip/model", "runs/x/00-siglip/siglip")  # doctest: +SKIP
    >>> scorer.score([image], ["A red circle at the centre."])  # doctest: +SKIP
    tensor([0.93])
    """

    def __init__(self, model: KeyeSiglip, image_processor, tokenizer, batch_size: int = 32):
        self.model, self.image_processor, self.tokenizer = model.eval(), image_processor, tokenizer
        self.batch_size = batch_size

    @classmethod
    def load(cls, model_dir: str | Path, siglip_dir: str | Path) -> ImageTextScorer:
        from keye_vl.image_processing import KeyeImageProcessor
        from keye_vl.tokenizer import load_tokenizer

        model = KeyeSiglip(load_visual(model_dir), SiglipTowers.load(siglip_dir), model_dir)
        return cls(model, KeyeImageProcessor.from_pretrained(str(model_dir)), load_tokenizer(str(model_dir)))

    @torch.no_grad()
    def image_embeds(self, images: list) -> torch.Tensor:
        """PIL images (or paths) -> [M, D], in batches of `batch_size`."""
        out = []
        for i in range(0, len(images), self.batch_size):
            inputs = self.image_processor.preprocess(images=images[i:i + self.batch_size])
            features = self.model.visual(inputs["pixel_values"], inputs["image_grid_thw"])
            out.append(self.model.towers.image_embeds(features, inputs["image_grid_thw"]))
        return torch.cat(out)

    @torch.no_grad()
    def text_embeds(self, texts: list[str]) -> torch.Tensor:
        ids = encode_texts(self.tokenizer, texts, self.model.towers.text_length)
        return torch.cat([self.model.towers.text_embeds(ids[i:i + self.batch_size])
                          for i in range(0, len(texts), self.batch_size)])

    @torch.no_grad()
    def logits(self, images: list, texts: list[str]) -> torch.Tensor:
        """[len(images), len(texts)] pair logits t * cos + b (retrieval ranks these)."""
        return self.model.towers.logits(self.image_embeds(images), self.text_embeds(texts))

    @torch.no_grad()
    def score(self, images: list, texts: list[str]) -> torch.Tensor:
        """[M]: sigmoid of image i's logit with text i (a score filter keeps pairs above a threshold)."""
        if len(images) != len(texts):
            raise ValueError(f"score pairs images with texts one to one: got {len(images)} images, {len(texts)} texts")
        towers = self.model.towers
        x = F.normalize(self.image_embeds(images), dim=-1)
        y = F.normalize(self.text_embeds(texts), dim=-1)
        return torch.sigmoid(towers.logit_scale.exp() * (x * y).sum(-1) + towers.logit_bias)

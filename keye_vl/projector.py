"""The `mlp_AR` projector: LayerNorm per patch, 2x2 merge of neighbouring patches, Linear-GELU-Linear.

Patches arrive in raster (t, h, w) order from the vision encoder; each output token concatenates the patches
(2i, 2j), (2i, 2j+1), (2i+1, 2j), (2i+1, 2j+1) (row offset outer), as the public checkpoint was trained.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN

from keye_vl.configuration import KeyeVLConfig
from keye_vl.vision import segment_lengths


class KeyeProjector(nn.Module):
    def __init__(self, config: KeyeVLConfig):
        super().__init__()
        vision, text = config.vision_config, config.text_config
        self.merge = vision.spatial_merge_size
        merged = vision.hidden_size * self.merge**2
        self.pre_norm = nn.LayerNorm(vision.hidden_size, eps=config.projector_layer_norm_eps)
        self.linear_1 = nn.Linear(merged, merged)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(merged, text.hidden_size)

    def forward(self, features: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        # features: [N, D_vision] in raster order -> [N / merge^2, D_text]
        merged = merge_patches(self.pre_norm(features), grid_thw, self.merge)
        return self.linear_2(self.act(self.linear_1(merged)))


def merge_patches(features: torch.Tensor, grid_thw: torch.Tensor, m: int) -> torch.Tensor:
    """[N, D] raster-order patches -> [N / m^2, m^2 * D]: each m x m block concatenated, row offset outer
    (einops: "(t h p1 w p2) d -> (t h w) (p1 p2 d)")."""
    dim = features.shape[-1]
    merged = []
    for (t, h, w), item in zip(grid_thw.tolist(), features.split(segment_lengths(grid_thw))):
        item = item.view(t, h // m, m, w // m, m, dim).permute(0, 1, 3, 2, 4, 5)
        merged.append(item.reshape(t * (h // m) * (w // m), m * m * dim))
    return torch.cat(merged)

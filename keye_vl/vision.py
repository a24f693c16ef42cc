"""The Keye-VL vision encoder: SigLIP layers at native resolution with 2-D RoPE.

Input is a packed sequence of 14x14 patches from any number of images and videos, in raster (t, h, w) order,
with `grid_thw` giving each item's shape. Three departures from plain SigLIP, all from Keye-VL:
- the learned 27x27 position table is bilinearly interpolated to each item's patch grid (repeated per frame);
- every attention layer rotates q and k by 2-D RoPE (first half of the rotary dims by patch row, second half by
  patch column, neox-style `rotate_half` over the whole head);
- attention is block-diagonal: each image, and each whole video, attends only within itself (one SDPA call
  per segment on CPU, flash-attn varlen on GPU). (The public
  code's non-flash path attends across images; that changes logits and is deliberately not reproduced.)

Parameter names follow the public checkpoint: `visual.vision_model.{embeddings,encoder,post_layernorm}`. The
checkpoint's pooling head is never read in forward and is not built. Its `packing_position_embedding` is never
read either, but vLLM's Keye model builds it and refuses a checkpoint without it, so it is kept as a frozen
buffer (`PackingPositionTable`) that every save writes.
This module knows nothing about tokens or the decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from keye_vl.configuration import KeyeVisionConfig

try:  # flash-attn's varlen kernel handles the block-diagonal layout without a mask (CUDA only)
    from flash_attn import flash_attn_varlen_func
except ImportError:  # pragma: no cover - CPU machines
    flash_attn_varlen_func = None


def segment_lengths(grid_thw: torch.Tensor) -> list[int]:
    """Patches per image/video: one attention segment each (a video's frames share one segment)."""
    return [int(t * h * w) for t, h, w in grid_thw.tolist()]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class VisionRotaryEmbedding2D(nn.Module):
    """cos/sin for 2-D RoPE: head_dim/4 frequencies for the row, as many for the column."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.rotary_dim = head_dim // 2  # 36 for head_dim 72: 18 row + 18 column frequencies
        self.theta = theta

    def forward(self, grid_thw: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Computed on the fly (not a buffer) so meta-device init and checkpoint loading never touch it.
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.rotary_dim, 2, device=device).float() / self.rotary_dim))
        rows, cols = [], []
        for t, h, w in grid_thw.tolist():
            pid = torch.arange(h * w, device=device).repeat(t)
            rows.append(pid // w)
            cols.append(pid % w)
        rows, cols = torch.cat(rows).float(), torch.cat(cols).float()
        freqs = torch.cat([rows[:, None] * inv_freq, cols[:, None] * inv_freq], dim=-1)  # [N, rotary_dim]
        emb = torch.cat([freqs, freqs], dim=-1)  # [N, head_dim]
        return emb.cos(), emb.sin()


PACKING_POSITIONS = 32768  # rows of the public checkpoint's (unused) packing position table


class PackingPositionTable(nn.Module):
    """The public checkpoint's `packing_position_embedding`: a frozen [32768, D] table no forward reads.

    A buffer, not a parameter: no optimizer state, no gradient, not sent to rollout engines with the weights;
    saved and loaded with the model so the public Keye code and vLLM accept our checkpoints.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(PACKING_POSITIONS, hidden_size))


class KeyeVisionEmbeddings(nn.Module):
    def __init__(self, config: KeyeVisionConfig):
        super().__init__()
        self.config = config
        self.patch_embedding = nn.Conv2d(config.num_channels, config.hidden_size,
                                         kernel_size=config.patch_size, stride=config.patch_size)
        self.table_side = config.image_size // config.patch_size
        self.position_embedding = nn.Embedding(self.table_side**2, config.hidden_size)
        self.packing_position_embedding = PackingPositionTable(config.hidden_size)

    def interpolated_positions(self, h: int, w: int) -> torch.Tensor:
        """The learned table resized to an h x w patch grid: [h*w, D]."""
        side, dim = self.table_side, self.config.hidden_size
        table = self.position_embedding.weight.reshape(1, side, side, dim).permute(0, 3, 1, 2)
        if (h, w) != (side, side):
            table = F.interpolate(table.float(), size=(h, w), mode="bilinear", align_corners=False)
        return table.permute(0, 2, 3, 1).reshape(h * w, dim).to(self.position_embedding.weight.dtype)

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        # pixel_values: [N, C, P, P], N = sum of t*h*w over items
        weight = self.patch_embedding.weight
        patches = self.patch_embedding(pixel_values.to(weight.dtype)).flatten(1)  # [N, D]
        cache: dict[tuple[int, int], torch.Tensor] = {}
        positions = []
        for t, h, w in grid_thw.tolist():
            if (h, w) not in cache:
                cache[(h, w)] = self.interpolated_positions(h, w)
            positions.append(cache[(h, w)].repeat(t, 1))
        return patches + torch.cat(positions)


class KeyeVisionAttention(nn.Module):
    def __init__(self, config: KeyeVisionConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, lengths: list[int], rope: tuple[torch.Tensor, torch.Tensor] | None):
        # x: [N, D] packed patches of all items
        n = x.shape[0]
        q, k, v = (proj(x).view(n, self.num_heads, self.head_dim) for proj in (self.q_proj, self.k_proj, self.v_proj))
        if rope is not None:
            cos, sin = (r.to(q.dtype)[:, None, :] for r in rope)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        dropout = self.dropout if self.training else 0.0
        if flash_attn_varlen_func is not None and x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
            cu = torch.tensor([0, *lengths], device=x.device).cumsum(0).to(torch.int32)
            out = flash_attn_varlen_func(q, k, v, cu, cu, max(lengths), max(lengths), dropout_p=dropout)
        else:
            # One SDPA call per segment: exact block-diagonal attention at sum(n_i^2) cost, where one call with
            # an [N, N] mask costs N^2 (measured 37x slower for 20 images of 256-512 patches on CPU). Inputs are
            # 4-D [1, heads, n_i, head_dim]: torch picks its CPU flash kernel only for 4-D inputs, 3-D ones take
            # the math path (measured 185x slower forward + backward for 16 segments of 256 patches).
            q, k, v = (t.transpose(0, 1)[None] for t in (q, k, v))  # [1, heads, N, head_dim]
            out = torch.cat([F.scaled_dot_product_attention(qs, ks, vs, dropout_p=dropout)
                             for qs, ks, vs in zip(q.split(lengths, 2), k.split(lengths, 2), v.split(lengths, 2))],
                            dim=2)[0].transpose(0, 1)
        return self.out_proj(out.reshape(n, -1))


class KeyeVisionMLP(nn.Module):
    def __init__(self, config: KeyeVisionConfig):
        super().__init__()
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(x)))


class KeyeVisionEncoderLayer(nn.Module):
    """Pre-LN transformer block, named as SigLIP's so SigLIP and Keye checkpoints load unchanged."""

    def __init__(self, config: KeyeVisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = KeyeVisionAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = KeyeVisionMLP(config)

    def forward(self, x, lengths, rope):
        x = x + self.self_attn(self.layer_norm1(x), lengths, rope)
        return x + self.mlp(self.layer_norm2(x))


class KeyeVisionEncoder(nn.Module):
    def __init__(self, config: KeyeVisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(KeyeVisionEncoderLayer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False

    def forward(self, x, lengths, rope):
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, lengths, rope, use_reentrant=False)
            else:
                x = layer(x, lengths, rope)
        return x


class KeyeVisionTransformer(nn.Module):
    def __init__(self, config: KeyeVisionConfig):
        super().__init__()
        self.config = config
        self.embeddings = KeyeVisionEmbeddings(config)
        self.encoder = KeyeVisionEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.rotary = VisionRotaryEmbedding2D(config.head_dim, config.rope_theta)

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """[N, C, P, P] patches + [M, 3] grids -> [N, D] features (before the projector's 2x2 merge)."""
        check_patches_match_grid(pixel_values, grid_thw, self.config)
        x = self.embeddings(pixel_values, grid_thw)
        rope = self.rotary(grid_thw, x.device) if self.config.use_2d_rope else None
        x = self.encoder(x, segment_lengths(grid_thw), rope)
        return self.post_layernorm(x)


class KeyeVisionModel(nn.Module):
    """Holder that gives the checkpoint's `visual.vision_model.*` names."""

    def __init__(self, config: KeyeVisionConfig):
        super().__init__()
        self.vision_model = KeyeVisionTransformer(config)

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        return self.vision_model(pixel_values, grid_thw)


def check_patches_match_grid(pixel_values: torch.Tensor, grid_thw: torch.Tensor, config: KeyeVisionConfig):
    """Fail with the numbers when pixels and grids disagree (instead of a shape error deep in attention)."""
    p = config.patch_size
    expected_shape = (config.num_channels, p, p)
    if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected_shape:
        raise ValueError(f"pixel_values must be [num_patches, {config.num_channels}, {p}, {p}] (raster-order patches "
                         f"from KeyeVLProcessor); got shape {tuple(pixel_values.shape)}")
    if grid_thw.ndim != 2 or grid_thw.shape[1] != 3:
        raise ValueError(f"grid_thw must be [num_items, 3] (t, h, w in patches); got shape {tuple(grid_thw.shape)}")
    expected = int(grid_thw.prod(-1).sum())
    if expected != pixel_values.shape[0]:
        raise ValueError(f"the grids {grid_thw.tolist()} describe {expected} patches but pixel_values holds "
                         f"{pixel_values.shape[0]}; pass the pixel_values and grid_thw that the processor returned "
                         f"together, for the same images in the same order")
    merge = config.spatial_merge_size
    if bool(((grid_thw[:, 1:] % merge) != 0).any()):
        raise ValueError(f"every grid's h and w must be multiples of spatial_merge_size={merge}; got "
                         f"{grid_thw.tolist()} (resize images to multiples of {p * merge} px, as the processor does)")

"""3-D rotary positions for the decoder ("mrope").

Every token gets a (t, h, w) position. Text tokens get the same index on all three axes. A vision block gets
t = floor(frame_index * seconds_per_frame * tokens_per_second) (0 for an image) and (h, w) on the 2x2-merged
grid, all offset by the position where the block starts; text after a block resumes at the block's max + 1.
The head's frequency pairs are split `mrope_section = [t, h, w]` ways: the first `t` pairs rotate by the
temporal index, the next `h` by the row, the last `w` by the column (Qwen2-VL's chunked layout).

`get_rope_index` also validates the placeholders against the grids, since this is where a truncated or
mismatched prompt becomes visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from keye_vl.configuration import KeyeTextConfig


@dataclass
class VisionTokenIds:
    image: int
    video: int
    vision_end: int


def vision_runs(ids: list[int], tokens: VisionTokenIds) -> list[tuple[int, int, int]]:
    """(start, length, token) of each maximal run of image/video placeholder tokens."""
    runs, i = [], 0
    while i < len(ids):
        if ids[i] in (tokens.image, tokens.video):
            j = i
            while j < len(ids) and ids[j] == ids[i]:
                j += 1
            runs.append((i, j - i, ids[i]))
            i = j
        else:
            i += 1
    return runs


def get_rope_index(
    input_ids: torch.Tensor,  # [B, L]
    tokens: VisionTokenIds,
    spatial_merge_size: int,
    tokens_per_second: float,
    image_grid_thw: torch.Tensor | None = None,  # [num_images, 3]
    video_grid_thw: torch.Tensor | None = None,  # [num_videos, 3]
    second_per_grid_ts: torch.Tensor | list[float] | None = None,  # [num_videos] seconds per frame
    attention_mask: torch.Tensor | None = None,  # [B, L], 0 = padding
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions [3, B, L] and per-row deltas [B, 1] (max position + 1 - row length) for decoding.

    Images and videos are consumed in order across the batch, as the processor packs them. Padding positions
    are set to 1 (they are masked out anyway).
    """
    batch, length = input_ids.shape
    grids = {tokens.image: _grid_list(image_grid_thw), tokens.video: _grid_list(video_grid_thw)}
    seconds = [float(s) for s in (second_per_grid_ts if second_per_grid_ts is not None else [])]
    used = {tokens.image: 0, tokens.video: 0}
    positions = torch.ones(3, batch, length, dtype=torch.long)
    deltas = torch.zeros(batch, 1, dtype=torch.long)
    for b in range(batch):
        keep = attention_mask[b].bool() if attention_mask is not None else torch.ones(length, dtype=torch.bool)
        ids = input_ids[b][keep].tolist()
        row, start, next_pos = [], 0, 0
        for run_start, run_len, token in vision_runs(ids, tokens):
            row.append(_text_positions(run_start - start, next_pos))
            next_pos += run_start - start
            kind = "image" if token == tokens.image else "video"
            k = used[token]
            if k >= len(grids[token]):
                raise ValueError(f"row {b} has more {kind} placeholder blocks than {kind}s were given "
                                 f"({len(grids[token])} in {kind}_grid_thw); give one {kind} per "
                                 f"<|{kind}_pad|> block, in order")
            t, h, w = grids[token][k]
            per_frame = seconds[k] if kind == "video" and k < len(seconds) else 1.0
            step = per_frame * tokens_per_second if kind == "video" else 0.0
            block = _vision_positions(t, h // spatial_merge_size, w // spatial_merge_size, step, next_pos)
            _check_block(b, kind, k, (t, h, w), block.shape[1], run_len, run_start + run_len, ids, tokens)
            row.append(block)
            next_pos = int(block.max()) + 1
            used[token] += 1
            start = run_start + run_len
        row.append(_text_positions(len(ids) - start, next_pos))
        row_positions = torch.cat(row, dim=1)
        positions[:, b, keep] = row_positions
        deltas[b] = (row_positions.max() + 1 - length) if row_positions.numel() else 0
    for token, kind in ((tokens.image, "image"), (tokens.video, "video")):
        if used[token] != len(grids[token]):
            raise ValueError(f"{len(grids[token])} {kind}s were given but the text has {used[token]} "
                             f"<|{kind}_pad|> blocks; put one placeholder per {kind} in the prompt "
                             f"(KeyeVLProcessor.apply_chat_template does this)")
    return positions.to(input_ids.device), deltas.to(input_ids.device)


def _grid_list(grid: torch.Tensor | None) -> list[tuple[int, int, int]]:
    return [tuple(g) for g in grid.tolist()] if grid is not None else []


def _text_positions(n: int, start: int) -> torch.Tensor:
    return (torch.arange(n) + start).expand(3, n)


def _vision_positions(t: int, h: int, w: int, step: float, start: int) -> torch.Tensor:
    t_index = (torch.arange(t).float() * step).long().view(t, 1, 1).expand(t, h, w)
    h_index = torch.arange(h).view(1, h, 1).expand(t, h, w)
    w_index = torch.arange(w).view(1, 1, w).expand(t, h, w)
    return torch.stack([t_index, h_index, w_index]).reshape(3, -1) + start


def _check_block(b, kind, k, grid, expected, found, end, ids, tokens: VisionTokenIds):
    if found != expected or (end < len(ids) and ids[end] != tokens.vision_end):
        hint = ("the prompt was cut inside a vision block: raise the prompt length limit or drop this sample"
                if end == len(ids) else
                "expand each placeholder with KeyeVLProcessor, which writes t*h*w/4 tokens per item")
        raise ValueError(f"row {b}: {kind} {k} with grid (t, h, w) = {grid} needs {expected} <|{kind}_pad|> "
                         f"tokens but its block holds {found}; {hint}")


class MultimodalRotaryEmbedding(nn.Module):
    """cos/sin [B, L, head_dim] from 3-D positions [3, B, L]."""

    def __init__(self, config: KeyeTextConfig):
        super().__init__()
        self.head_dim = config.head_dim
        self.theta = float(config.rope_parameters["rope_theta"])
        self.section = config.mrope_section
        if sum(self.section) * 2 != self.head_dim:
            raise ValueError(f"mrope_section {self.section} must sum to head_dim/2 = {self.head_dim // 2}")

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Computed on the fly (not a buffer) so meta-device init and checkpoint loading never touch it.
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, device=x.device).float() / self.head_dim))
        freqs = position_ids[..., None].float() * inv_freq  # [3, B, L, head_dim/2]
        chunks = freqs.split(self.section, dim=-1)
        freqs = torch.cat([chunk[i % 3] for i, chunk in enumerate(chunks)], dim=-1)  # [B, L, head_dim/2]
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

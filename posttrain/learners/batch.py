"""`TrainBatch`: what rollouts and data loaders hand to a learner, and its checks.

Layout: one row per sequence, [B, L]. A row's real tokens are one contiguous span of `attention_mask` (left or
right padding both work). Per-token tensors are aligned with `input_ids`: `old_logprobs[b, t]` is
log p(input_ids[b, t] | input_ids[b, <t]), the convention of the rollout engines; position 0 of a sequence has no
log-prob and never carries loss. Vision inputs follow the processor: patches of all images, sample-major, in
placeholder order, with one `image_grid_thw` row per image (likewise videos).

Boundary: this module knows nothing of models, losses or ranks; `micro_batches.py` turns a batch into padded
or packed micro-batches, the learner runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

PER_TOKEN = ("input_ids", "attention_mask", "loss_mask", "old_logprobs", "ref_logprobs")
PER_SAMPLE = ("advantages", "chosen", "group_ids")
VISION = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


@dataclass(frozen=True)
class VisionLayout:
    """How vision inputs map onto placeholder tokens (from the model config)."""

    image_token_id: int
    video_token_id: int
    merge_size: int  # spatial merge: a grid (t, h, w) fills t*h*w / merge_size**2 placeholder tokens

    @classmethod
    def from_config(cls, config) -> VisionLayout | None:
        vision = getattr(config, "vision_config", None)
        if vision is None or getattr(config, "image_token_id", None) is None:
            return None
        return cls(config.image_token_id, config.video_token_id, vision.spatial_merge_size)


@dataclass
class TrainBatch:
    input_ids: Tensor  # [B, L] long
    attention_mask: Tensor  # [B, L], 1 on real tokens (one contiguous span per row)
    loss_mask: Tensor  # [B, L], 1 on tokens that carry loss (subset of attention_mask)
    old_logprobs: Tensor | None = None  # [B, L] behaviour-policy log-probs (rollout sampler)
    ref_logprobs: Tensor | None = None  # [B, L] reference-model log-probs
    advantages: Tensor | None = None  # [B]
    chosen: Tensor | None = None  # [B] bool, preference batches
    group_ids: Tensor | None = None  # [B] long; rows of a group stay in one micro-batch (preference pairs)
    pixel_values: Tensor | None = None  # [N_img_patches, C, P, P]
    image_grid_thw: Tensor | None = None  # [num_images, 3]
    pixel_values_videos: Tensor | None = None  # [N_vid_patches, C, P, P]
    video_grid_thw: Tensor | None = None  # [num_videos, 3]
    second_per_grid_ts: Tensor | None = None  # [num_videos]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def has_vision(self) -> bool:
        return self.pixel_values is not None or self.pixel_values_videos is not None

    def to_dict(self) -> dict[str, Tensor | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # ------------------------------------------------------------------------------------------ checks
    def validate(self, vocab_size: int | None = None) -> TrainBatch:
        """Raise ValueError naming the field and the fix; returns self so calls chain."""
        ids = self.input_ids
        if ids.ndim != 2 or ids.dtype not in (torch.long, torch.int):
            raise ValueError(f"input_ids must be a [B, L] integer tensor, got {tuple(ids.shape)} {ids.dtype}")
        for name in PER_TOKEN:
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != tuple(ids.shape):
                raise ValueError(f"{name} has shape {tuple(value.shape)} but input_ids has {tuple(ids.shape)}; "
                                 f"rollout and learner must use the same [B, L] layout (pad both the same way)")
        for name in PER_SAMPLE:
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (len(self),):
                raise ValueError(f"{name} must have shape [B] = ({len(self)},), got {tuple(value.shape)}")
        for name in ("old_logprobs", "ref_logprobs", "advantages"):
            value = getattr(self, name)
            if value is not None and not torch.isfinite(value[self._token_mask(value)]).all():
                raise ValueError(f"{name} holds NaN/inf; fix the stage that produced it (rewards must record "
                                 f"failures per sample instead of passing NaN on)")
        if vocab_size is not None and len(self) and int(ids.max()) >= vocab_size:
            raise ValueError(f"input_ids contain id {int(ids.max())} >= the model's vocab_size {vocab_size}; the "
                             f"tokenizer does not belong to this model")
        attn = self.attention_mask.bool()
        if (self.loss_mask.bool() & ~attn).any():
            raise ValueError("loss_mask is set on padding (attention_mask == 0); build both masks from one padding")
        spans = (attn[:, 1:] & ~attn[:, :-1]).sum(-1) + attn[:, 0].long()  # number of runs of real tokens
        if (spans > 1).any():
            rows = torch.nonzero(spans > 1).flatten().tolist()
            raise ValueError(f"rows {rows[:8]} have real tokens in several spans; pad only on the left or right")
        if (attn.sum(-1) == 0).any():
            raise ValueError("some rows have no real tokens; drop empty samples before training")
        return self

    def _token_mask(self, value: Tensor) -> Tensor:
        return self.loss_mask.bool() if value.ndim == 2 else torch.ones_like(value, dtype=torch.bool)

    # ------------------------------------------------------------------------------------------ slicing
    def spans(self) -> tuple[Tensor, Tensor]:
        """(start, length) of each row's real tokens, both [B]."""
        attn = self.attention_mask.bool()
        return attn.long().argmax(-1), attn.sum(-1)

    def select(self, index: Tensor | list[int], layout: VisionLayout | None = None) -> TrainBatch:
        """Rows `index` (vision inputs sliced to those rows' images and videos)."""
        index = torch.as_tensor(index, dtype=torch.long)
        out = {name: (v[index] if v is not None else None)
               for name, v in self.to_dict().items() if name in PER_TOKEN + PER_SAMPLE}
        out.update(vision_for_rows(self, index.tolist(), layout))
        return TrainBatch(**out)

    def shard(self, rank: int, world_size: int, layout: VisionLayout | None = None) -> TrainBatch:
        """Contiguous 1/world_size of the rows; groups must not straddle shards."""
        if len(self) % world_size:
            raise ValueError(f"batch of {len(self)} rows cannot be split evenly over {world_size} learner ranks; "
                             f"make the rollout batch a multiple of the learner world size")
        size = len(self) // world_size
        lo, hi = rank * size, (rank + 1) * size
        for cut in (lo, hi):
            if self.group_ids is not None and 0 < cut < len(self) and \
                    bool(self.group_ids[cut] == self.group_ids[cut - 1]):
                raise ValueError(f"group {int(self.group_ids[cut])} straddles learner shards at row {cut}; keep "
                                 f"groups contiguous and their sizes dividing the shard size {size}")
        return self.select(list(range(lo, hi)), layout)

    @staticmethod
    def concat(batches: list[TrainBatch]) -> TrainBatch:
        """Stack batches with the same L (for tests and the learner group)."""
        out = {}
        for f in fields(TrainBatch):
            values = [getattr(b, f.name) for b in batches]
            out[f.name] = None if any(v is None for v in values) else torch.cat(values)
        return TrainBatch(**out)

    def with_fields(self, **changes) -> TrainBatch:
        return replace(self, **changes)


def vision_for_rows(batch: TrainBatch, rows: list[int], layout: VisionLayout | None) -> dict[str, Tensor | None]:
    """Vision tensors restricted to `rows`, concatenated in that row order (placeholder order after re-layout)."""
    if not batch.has_vision:
        return {name: None for name in VISION}
    if layout is None:
        raise ValueError("this batch carries pixel values but the model has no vision layout (image/video token "
                         "ids); train a vision-language model or drop the vision fields")
    out: dict[str, Tensor | None] = {name: None for name in VISION}
    for kind, token, pixels, grid in (("image", layout.image_token_id, "pixel_values", "image_grid_thw"),
                                      ("video", layout.video_token_id, "pixel_values_videos", "video_grid_thw")):
        if getattr(batch, pixels) is None:
            continue
        grids = getattr(batch, grid)
        per_row = _items_per_row(batch.input_ids == token, grids, layout.merge_size, kind)
        patch_end = torch.cumsum(grids.prod(-1), 0).tolist()
        picked_items = [k for r in rows for k in per_row[r]]
        if not picked_items:  # these rows have no such item: the model must see None, not an empty tensor
            continue
        patches = [torch.arange(patch_end[k - 1] if k else 0, patch_end[k]) for k in picked_items]
        index = torch.cat(patches) if patches else torch.zeros(0, dtype=torch.long)
        out[pixels] = getattr(batch, pixels)[index]
        out[grid] = grids[picked_items]
        if kind == "video" and batch.second_per_grid_ts is not None:
            out["second_per_grid_ts"] = batch.second_per_grid_ts[picked_items]
    return out


def _items_per_row(slots: Tensor, grids: Tensor | None, merge: int, kind: str) -> list[list[int]]:
    """Which images (or videos) each row owns, by matching placeholder counts to grid sizes in order."""
    if grids is None:
        raise ValueError(f"{kind} pixels were given without {kind}_grid_thw; pass both from the processor")
    tokens = (grids.prod(-1) // (merge * merge)).tolist()
    counts, out, k = slots.sum(-1).tolist(), [], 0
    for row, need in enumerate(counts):
        owned = []
        while need > 0 and k < len(tokens):
            owned.append(k)
            need -= tokens[k]
            k += 1
        if need != 0:
            raise ValueError(f"row {row}: its <|{kind}_pad|> tokens do not match the {kind} grids in order "
                             f"({kind}_grid_thw {grids.tolist()}); expand placeholders with KeyeVLProcessor")
        out.append(owned)
    if k != len(tokens):
        raise ValueError(f"{len(tokens) - k} {kind}s have no placeholder tokens in the batch")
    return out

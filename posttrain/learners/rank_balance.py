"""FLOPs-based balancing of a batch's rows across data-parallel learner ranks.

Why: every rank waits for the slowest at each gradient all-reduce, and multimodal rows differ in cost by far more
than their token counts say: an image row pays for its vision tower patches, and attention grows with the square
of each sequence (and of each image, whose attention is block-diagonal). A contiguous split can hand one rank all
the images. `CostModel` estimates a row's training FLOPs (forward + backward, 3x the forward) from the model
config; `balanced_order` assigns rows to ranks longest-processing-time first (the costliest unit to the least
loaded rank that still has room, every rank getting the same number of rows so the losses' normalisation and
`TrainBatch.shard` are unchanged) and returns the row order whose contiguous shards are that assignment.

The estimate counts the matrix multiplications only (weights and attention), which dominate at every size this
toolkit trains; norms, activations and the optimizer step are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from posttrain.learners.batch import TrainBatch, VisionLayout


@dataclass(frozen=True)
class CostModel:
    text_params: int  # decoder matrices (attention + MLP) and lm_head: multiplied once per token
    text_attention: int  # layers x attention width: one token pair costs 2 x this in QK^T plus AV
    vision_params: int  # vision tower matrices and projector: once per patch (0 for a text-only model)
    vision_attention: int  # per patch pair, within one image

    @classmethod
    def from_config(cls, config) -> CostModel:
        """From a Hugging Face config: Keye-VL (decoder fields read through to the text config), Qwen3, Llama."""
        text = getattr(config, "text_config", None) or config
        hidden, layers = text.hidden_size, text.num_hidden_layers
        head_dim = getattr(text, "head_dim", None) or hidden // text.num_attention_heads
        width, kv = text.num_attention_heads * head_dim, text.num_key_value_heads * head_dim
        per_layer = 2 * hidden * width + 2 * hidden * kv + 3 * hidden * text.intermediate_size
        text_params = layers * per_layer + hidden * text.vocab_size
        vision = getattr(config, "vision_config", None)
        if vision is None:
            return cls(text_params, layers * width, 0, 0)
        d, merge = vision.hidden_size, vision.spatial_merge_size
        tower = vision.num_hidden_layers * (4 * d * d + 2 * d * vision.intermediate_size)
        projector = (d * merge**2) ** 2 + d * merge**2 * hidden  # mlp_AR per merged token ...
        return cls(text_params, layers * width, tower + projector // merge**2,  # ... spread over its patches
                   vision.num_hidden_layers * d)

    def row_flops(self, tokens: int, image_patches: list[int]) -> float:
        """Training FLOPs of one row: `tokens` real tokens, one patch count per image / video it shows."""
        forward = 2 * self.text_params * tokens + 4 * self.text_attention * tokens**2
        forward += sum(2 * self.vision_params * p + 4 * self.vision_attention * p**2 for p in image_patches)
        return 3.0 * forward


def row_costs(batch: TrainBatch, layout: VisionLayout | None, model: CostModel) -> list[float]:
    """Each row's FLOPs; a row's images are found by its placeholder tokens, in placeholder order."""
    _, lengths = batch.spans()
    patches = vision_patches_per_row(batch, layout)
    return [model.row_flops(int(n), p) for n, p in zip(lengths.tolist(), patches)]


def vision_patches_per_row(batch: TrainBatch, layout: VisionLayout | None) -> list[list[int]]:
    rows: list[list[int]] = [[] for _ in range(len(batch))]
    if layout is None or not batch.has_vision:
        return rows
    for token, grids in ((layout.image_token_id, batch.image_grid_thw), (layout.video_token_id, batch.video_grid_thw)):
        if grids is None:
            continue
        sizes = [int(t * h * w) for t, h, w in grids.tolist()]
        placeholders = (batch.input_ids == token).sum(-1).tolist()  # merged tokens: patches / merge**2 each
        at = 0
        for row, count in enumerate(placeholders):
            while count > 0 and at < len(sizes):
                rows[row].append(sizes[at])
                count -= sizes[at] // layout.merge_size**2
                at += 1
    return rows


def balanced_order(costs: list[float], units: list[list[int]], world_size: int) -> list[int] | None:
    """Row order whose `world_size` contiguous equal shards balance the cost; None when the units (groups kept
    whole) cannot fill equal shards, in which case the caller keeps the contiguous split."""
    per_rank = sum(len(u) for u in units) // world_size
    ranks: list[list[int]] = [[] for _ in range(world_size)]
    load = [0.0] * world_size
    for unit in sorted(units, key=lambda u: -sum(costs[i] for i in u)):
        open_ranks = [r for r in range(world_size) if len(ranks[r]) + len(unit) <= per_rank]
        if not open_ranks:
            return None
        r = min(open_ranks, key=lambda k: load[k])
        ranks[r].extend(unit)
        load[r] += sum(costs[i] for i in unit)
    return [i for rank in ranks for i in rank]


def imbalance(costs: list[float], order: list[int], world_size: int) -> float:
    """Slowest rank's cost over the mean rank's (1.0 is perfect) when `order` is split into contiguous shards."""
    per_rank = len(order) // world_size
    loads = [sum(costs[i] for i in order[r * per_rank:(r + 1) * per_rank]) for r in range(world_size)]
    mean = sum(loads) / world_size
    return max(loads) / mean if mean > 0 else 1.0


def inverse(order: list[int]) -> torch.Tensor:
    """Index that puts rows back: reordered[inverse(order)] == original."""
    back = torch.empty(len(order), dtype=torch.long)
    back[torch.as_tensor(order)] = torch.arange(len(order))
    return back

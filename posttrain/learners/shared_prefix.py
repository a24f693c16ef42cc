"""Shared-prefix micro-batches: each group's common prompt computed once, its completions after it.

In GRPO the G rows of a group share their prompt token for token (images included). Here a group becomes one
sequence: the prefix once, then each row's remainder (its completion), with a mask under which a completion
attends to the prefix and to itself only (causally), and each token at the position it has in its own row (the
row-per-sample positions: Keye's 3-D RoPE indices from `get_rope_index`, or 0..n-1), so every log-prob equals
the row-per-sample one. The vision tower sees the prefix's images once per group; images inside a completion
(agentic tool results) stay with that completion. The first token of each completion is predicted from the
prefix's last slot, so log-probs are read through `predecessor` (the slot whose logits score each token)
rather than the next slot of the row.

The prefix is the longest common token prefix of the group's real tokens, cut before any vision item that
straddles it or whose grid or pixels differ between rows (equal placeholders do not mean equal images). Groups
are `units_of(batch)` (consecutive equal `group_ids`); a batch without them shares nothing (each row its own
group). Micro-batch modes as in `micro_batches.py`, over groups: `none`/`bucket` put one group per row, `pack`
puts several groups end to end in a row (the mask is then block-diagonal across groups), `auto` picks.

The mask is a dense [r, 1, Lp, Lp] bool tensor (SDPA on CPU): the completion-to-other-completion blocks are
masked but still computed, so attention costs (p + G*c)^2 per group instead of G*(p + c)^2; what is saved is the
prefix's G-1 repeats in every projection, MLP and the vision tower. A kernel that skips masked blocks
(FlexAttention) removes the waste on GPU; that path is not written yet.

Boundary: like `micro_batches.py`, this module knows token tensors and the vision layout, not models or losses.
"""

from __future__ import annotations

import torch
from torch import Tensor

from posttrain.learners.batch import TrainBatch, VisionLayout, _items_per_row
from posttrain.learners.micro_batches import (PACK_FROM_PADDING, Layout, MicroBatch, _balance, _bucket_bins,
                                              _pack_rows, _padding, _split_even, checked_units)

KINDS = (("image", "pixel_values", "image_grid_thw"), ("video", "pixel_values_videos", "video_grid_thw"))


def build_shared_micro_batches(batch: TrainBatch, count: int, mode: str, positions: Tensor,
                               layout: VisionLayout | None = None, pack_length: int | None = None,
                               pad_token_id: int = 0) -> Layout:
    """Split `batch` into exactly `count` micro-batches of shared-prefix groups. positions: [P, B, L]."""
    units = checked_units(batch, count, mode)
    starts, lengths = batch.spans()
    items = _vision_items(batch, layout, starts)
    prefixes = [prefix_length(batch, unit, starts, lengths, items) for unit in units]
    sizes = torch.tensor([p + sum(int(lengths[i]) - p for i in unit) for unit, p in zip(units, prefixes)])
    groups = [[u] for u in range(len(units))]  # the micro-batch helpers place these "sequences" of `sizes`
    packed = mode == "pack"
    if mode == "none":
        bins = [[[u] for unit in chunk for u in unit] for chunk in _split_even(groups, count)]
    elif mode in ("bucket", "auto"):
        bins = _bucket_bins(groups, sizes, count)
        packed = mode == "auto" and _padding(bins, sizes) > PACK_FROM_PADDING
    if packed:
        capacity = max(int(sizes.max()), pack_length or 0)
        bins = [_pack_rows(chunk, sizes, capacity) for chunk in _balance(groups, sizes, count)]
    placed = _Placement(batch, units, prefixes, starts, lengths, positions, items, pad_token_id)
    micro = [placed.micro_batch(rows) for rows in bins]
    return Layout(micro, sum(m.real_tokens for m in micro), sum(m.slot_tokens for m in micro), packed)


def prefix_length(batch: TrainBatch, rows: list[int], starts: Tensor, lengths: Tensor,
                  items: list[list[tuple]]) -> int:
    """Tokens that all `rows` share from their start (0 for a single row: nothing to share).

    items[i]: (kind, item, start, end) of row i's vision items, start/end relative to the row's first real token.
    """
    if len(rows) < 2:
        return 0
    head = rows[0]
    first = batch.input_ids[head, int(starts[head]):int(starts[head]) + int(lengths[head])]
    shared = int(min(int(lengths[i]) for i in rows))
    for i in rows[1:]:
        other = batch.input_ids[i, int(starts[i]):int(starts[i]) + shared]
        differ = torch.nonzero(first[:shared] != other).flatten()
        shared = int(differ[0]) if len(differ) else shared
    for k, (kind, item, start, end) in enumerate(items[head]):
        if start >= shared:
            break
        if end > shared or not all(k < len(items[i]) and _same_item(batch, items[head][k], items[i][k])
                                   for i in rows[1:]):
            return start
    return shared


def _same_item(batch: TrainBatch, one: tuple, other: tuple) -> bool:
    """Whether two (kind, item, start, end) vision items are the same image/video at the same place."""
    (kind, a, *span), (other_kind, b, *other_span) = one, other
    if kind != other_kind or span != other_span:
        return False
    _, pixels, grid = next(k for k in KINDS if k[0] == kind)
    grids = getattr(batch, grid)
    if not torch.equal(grids[a], grids[b]):
        return False
    if kind == "video" and batch.second_per_grid_ts is not None and \
            float(batch.second_per_grid_ts[a]) != float(batch.second_per_grid_ts[b]):
        return False
    ends, n = torch.cumsum(grids.prod(-1), 0).tolist(), int(grids[a].prod())
    patches = getattr(batch, pixels)
    return torch.equal(patches[ends[a] - n:ends[a]], patches[ends[b] - n:ends[b]])


def _vision_items(batch: TrainBatch, layout: VisionLayout | None, starts: Tensor) -> list[list[tuple]]:
    """Per row, (kind, item index, start, end) of each image/video, by its placeholder tokens, in token order."""
    rows: list[list[tuple]] = [[] for _ in range(len(batch))]
    if not batch.has_vision:
        return rows
    if layout is None:
        raise ValueError("this batch carries pixel values but the model has no vision layout (image/video token "
                         "ids); train a vision-language model or drop the vision fields")
    for kind, pixels, grid in KINDS:
        if getattr(batch, pixels) is None:
            continue
        token = layout.image_token_id if kind == "image" else layout.video_token_id
        slots = batch.input_ids == token
        grids = getattr(batch, grid)
        per_row = _items_per_row(slots, grids, layout.merge_size, kind)
        sizes = (grids.prod(-1) // layout.merge_size ** 2).tolist()
        for r, owned in enumerate(per_row):
            where = (torch.nonzero(slots[r]).flatten() - int(starts[r])).tolist()
            used = 0
            for k in owned:
                rows[r].append((kind, k, where[used], where[used + sizes[k] - 1] + 1))
                used += sizes[k]
    for row in rows:
        row.sort(key=lambda item: item[2])
    return rows


class _Placement:
    """Lays groups (prefix, then each row's remainder) into micro-batch rows."""

    def __init__(self, batch: TrainBatch, units: list[list[int]], prefixes: list[int], starts: Tensor,
                 lengths: Tensor, positions: Tensor, items: list[list[tuple]], pad_token_id: int):
        self.batch, self.units, self.prefixes, self.items = batch, units, prefixes, items
        self.starts, self.lengths, self.positions, self.pad = starts.tolist(), lengths.tolist(), positions, pad_token_id

    def size(self, u: int) -> int:
        p = self.prefixes[u]
        return p + sum(self.lengths[i] - p for i in self.units[u])

    def micro_batch(self, rows: list[list[int]]) -> MicroBatch:
        batch, full_l = self.batch, self.batch.input_ids.shape[1]
        row_len = max(sum(self.size(u) for u in row) for row in rows)
        samples = [i for row in rows for u in row for i in self.units[u]]
        l_max, n_rows, n = max(self.lengths[i] for i in samples), len(rows), len(samples)
        self.ids = torch.full((n_rows, row_len), self.pad, dtype=batch.input_ids.dtype)
        self.pos = torch.zeros(self.positions.shape[0], n_rows, row_len, dtype=self.positions.dtype)
        self.segment = torch.full((n_rows, row_len), -1, dtype=torch.long)  # which piece owns each slot
        self.sees = torch.full((n_rows, row_len), -1, dtype=torch.long)  # the prefix piece each slot also sees
        self.vision: dict[str, list[int]] = {"image": [], "video": []}
        gather = torch.zeros(n, l_max, dtype=torch.long)
        source = torch.zeros(n, l_max, dtype=torch.long)
        valid = torch.arange(l_max).unsqueeze(0) < torch.tensor([self.lengths[i] for i in samples]).unsqueeze(1)
        k = piece = 0
        for r, row in enumerate(rows):
            offset = 0
            for u in row:
                p, head = self.prefixes[u], self.units[u][0]
                prefix_at, prefix_piece = offset, piece
                offset = self._place(r, head, 0, p, offset, piece, prefix_piece)
                piece += 1
                for i in self.units[u]:
                    n_i = self.lengths[i]
                    gather[k, :p] = r * row_len + prefix_at + torch.arange(p)
                    gather[k, p:n_i] = r * row_len + offset + torch.arange(n_i - p)
                    source[k, :n_i] = i * full_l + self.starts[i] + torch.arange(n_i)
                    offset = self._place(r, i, p, n_i, offset, piece, prefix_piece)
                    piece += 1
                    k += 1
        predecessor = torch.cat([gather[:, :1], gather[:, :-1]], dim=1) * valid
        real = int((self.segment >= 0).sum())
        return MicroBatch(torch.tensor(samples), self.ids, shared_prefix_mask(self.segment, self.sees), self.pos,
                          gather * valid, source * valid, valid, self._vision_inputs(), real, n_rows * row_len,
                          predecessor=predecessor)

    def _place(self, r: int, i: int, a: int, b: int, offset: int, piece: int, prefix_piece: int) -> int:
        """Row i's real tokens [a, b) at slots [offset, offset + b - a) of micro-batch row r; returns the end."""
        s, end = self.starts[i], offset + b - a
        self.ids[r, offset:end] = self.batch.input_ids[i, s + a:s + b]
        self.pos[:, r, offset:end] = self.positions[:, i, s + a:s + b]
        self.segment[r, offset:end] = piece
        self.sees[r, offset:end] = prefix_piece
        for kind, item, start, _ in self.items[i]:
            if a <= start < b:
                self.vision[kind].append(item)
        return end

    def _vision_inputs(self) -> dict[str, Tensor | None]:
        batch = self.batch
        out: dict[str, Tensor | None] = {"pixel_values": None, "image_grid_thw": None, "pixel_values_videos": None,
                                         "video_grid_thw": None, "second_per_grid_ts": None}
        for kind, pixels, grid in KINDS:
            picked = self.vision[kind]
            if not picked:  # the model must see None, not an empty tensor
                continue
            grids = getattr(batch, grid)
            ends = torch.cumsum(grids.prod(-1), 0).tolist()
            index = torch.cat([torch.arange(ends[k - 1] if k else 0, ends[k]) for k in picked])
            out[pixels] = getattr(batch, pixels)[index]
            out[grid] = grids[picked]
            if kind == "video" and batch.second_per_grid_ts is not None:
                out["second_per_grid_ts"] = batch.second_per_grid_ts[picked]
        return out


def shared_prefix_mask(segment: Tensor, sees: Tensor) -> Tensor:
    """[r, Lp] piece ids and the prefix piece each slot also sees -> [r, 1, Lp, Lp] bool: a slot attends causally
    within its own piece and to its group's prefix; a padding slot (-1) attends only to itself, so no attention
    row is empty (an empty row makes SDPA return NaN). With `sees == segment` this is packing's block mask."""
    length = segment.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    visible = (segment.unsqueeze(2) == segment.unsqueeze(1)) | (sees.unsqueeze(2) == segment.unsqueeze(1))
    real = (segment >= 0).unsqueeze(2)
    eye = torch.eye(length, dtype=torch.bool)
    return ((visible & real & causal) | eye).unsqueeze(1)


def token_logprobs(logits: Tensor, mb: MicroBatch, entropy: bool, entropy_grad: bool) -> tuple[Tensor, Tensor | None]:
    """Compact [n, l] log-probs (column 0 and padding: 0) from [r, Lp, V] logits, each token scored by its
    predecessor's slot, and optional entropies of the same distributions."""
    flat = logits.reshape(-1, logits.shape[-1])  # [r * Lp, V]
    device = flat.device
    predecessor, valid = mb.predecessor.to(device), mb.valid.to(device).clone()
    valid[:, 0] = False  # nothing predicts a sequence's first token
    target = mb.input_ids.reshape(-1).to(device)[mb.gather.to(device)]  # [n, l]
    lse = torch.logsumexp(flat, dim=-1)  # [r * Lp]
    logp = (flat[predecessor, target] - lse[predecessor]) * valid
    ent = None
    if entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            per_slot = lse - (torch.softmax(flat, -1) * flat).sum(-1)
            ent = per_slot[predecessor] * valid
    return logp, ent

"""Micro-batches for gradient accumulation, built so that padding stays small, with the padding fraction reported.

Modes:
- `none`: rows as given, split in order; every micro-batch is padded to the batch's L (the baseline).
- `bucket`: rows sorted by length and cut into equal-count micro-batches, each padded to its own longest row.
  Works with every attention backend (2-D padding mask).
- `pack`: sequences placed end to end in rows of `pack_length` tokens (first-fit decreasing), with a
  block-diagonal causal mask ([r, 1, Lp, Lp] bool) and positions restarting per sequence, so each sequence sees
  only itself: the logits equal those of the unpacked sequence. Needs an attention backend that takes a 4-D mask
  (SDPA, eager), not flash-attention's varlen path.
- `auto` (the default): per batch, `pack` when `bucket` would leave more than `PACK_FROM_PADDING` of the slots
  padding (Keye's mixed-mode batches: short no_think answers beside long think ones), else `bucket` (batches of
  like lengths, where packing's block-diagonal mask costs more than the padding it removes).
The number of micro-batches is fixed (the learner's accumulation steps), so every data-parallel rank runs the
same number of backward passes, which ZeRO-2/3 require. Groups (`group_ids`, e.g. preference pairs) never split.

Each `MicroBatch` also carries the map back to the batch's compact per-sample layout `[n, l]` (row of sample
i = its real tokens from position 0), in which losses are computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from posttrain.learners.batch import TrainBatch, VisionLayout, vision_for_rows

MODES = ("none", "bucket", "pack", "auto")
# Measured on 2 cores (AMD EPYC, fp32; 26M Qwen3, one RL batch of 64 rows, forward + backward, bucket vs pack):
# bucket padding 0.12 -> pack 1.09x, 0.18 -> 0.94x, 0.28 -> 1.25x, 0.44 -> 1.40x, 0.50 -> 1.93x, 0.59 -> 4.99x;
# on the 1M model the two are within noise below 0.2. Packing pays from about a quarter of the slots padded.
PACK_FROM_PADDING = 0.25


@dataclass
class MicroBatch:
    sample_index: Tensor  # [n] rows of the TrainBatch, in compact-row order
    input_ids: Tensor  # [r, Lp]
    attention_mask: Tensor  # [r, Lp] (none/bucket) or [r, 1, Lp, Lp] bool (pack)
    position_ids: Tensor  # [P, r, Lp]
    gather: Tensor  # [n, l] flat index into the [r * Lp] micro-batch tokens
    source: Tensor  # [n, l] flat index into the [B * L] batch tokens
    valid: Tensor  # [n, l] bool, real tokens of the compact layout
    vision: dict[str, Tensor | None]
    real_tokens: int
    slot_tokens: int  # r * Lp, what the model computes on
    # [n, l] flat slot whose logits score each compact token (shared_prefix.py); None: the slot before it in its row
    predecessor: Tensor | None = None

    def take(self, per_token: Tensor) -> Tensor:
        """A [B, L] batch tensor in this micro-batch's compact layout [n, l] (0 outside `valid`)."""
        return torch.where(self.valid, per_token.reshape(-1)[self.source], torch.zeros((), dtype=per_token.dtype))

    def unpack(self, flat_values: Tensor) -> Tensor:
        """[r, Lp] (or [r * Lp]) micro-batch values -> compact [n, l]."""
        device = flat_values.device
        return flat_values.reshape(-1)[self.gather.to(device)] * self.valid.to(device)


@dataclass
class Layout:
    micro_batches: list[MicroBatch]
    real_tokens: int
    slot_tokens: int
    packed: bool = False  # what `auto` chose, for the step's metrics

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.real_tokens / max(self.slot_tokens, 1)


def checked_units(batch: TrainBatch, count: int, mode: str) -> list[list[int]]:
    """The batch's units (`units_of`), refused with the fix where `mode` is unknown or they cannot fill `count`
    micro-batches."""
    if mode not in MODES:
        raise ValueError(f"unknown micro-batch mode {mode!r}; choose one of {MODES}")
    units = units_of(batch)
    if len(units) < count:
        raise ValueError(f"{len(batch)} rows ({len(units)} groups) cannot fill {count} micro-batches; give each "
                         f"learner rank at least grad_accum_steps groups or lower grad_accum_steps")
    return units


def build_micro_batches(batch: TrainBatch, count: int, mode: str, positions: Tensor,
                        layout: VisionLayout | None = None, pack_length: int | None = None,
                        pad_token_id: int = 0) -> Layout:
    """Split `batch` into exactly `count` micro-batches. positions: [P, B, L] model positions of the batch."""
    units = checked_units(batch, count, mode)
    starts, lengths = batch.spans()
    if mode == "none":
        bins = [[[i] for unit in chunk for i in unit] for chunk in _split_even(units, count)]
        return _assemble(batch, bins, starts, lengths, positions, layout, pad_token_id, packed=False,
                         row_length=batch.input_ids.shape[1])
    if mode in ("bucket", "auto"):
        bins = _bucket_bins(units, lengths, count)
        if mode == "bucket" or _padding(bins, lengths) <= PACK_FROM_PADDING:
            return _assemble(batch, bins, starts, lengths, positions, layout, pad_token_id, packed=False)
    capacity = max(int(lengths.max()), pack_length or 0)
    bins = [_pack_rows(chunk, lengths, capacity) for chunk in _balance(units, lengths, count)]
    return _assemble(batch, bins, starts, lengths, positions, layout, pad_token_id, packed=True)


def _bucket_bins(units: list[list[int]], lengths: Tensor, count: int) -> list[list[list[int]]]:
    """Units sorted by their longest row and cut into `count` equal-count micro-batches of one row per sequence."""
    by_length = sorted(units, key=lambda u: -max(int(lengths[i]) for i in u))
    return [[[i] for unit in chunk for i in unit] for chunk in _split_even(by_length, count)]


def _padding(bins: list[list[list[int]]], lengths: Tensor) -> float:
    """The padding fraction of unpacked bins (each padded to its longest row), from the lengths alone.

    >>> _padding([[[0], [1], [2], [3]]], torch.tensor([10, 10, 2, 2]))  # 24 of 40 slots real
    0.4
    >>> _padding([[[0], [1]], [[2], [3]]], torch.tensor([10, 10, 2, 2]))  # [10, 10] and [2, 2]
    0.0
    """
    samples = [[i for row in micro_batch for i in row] for micro_batch in bins]
    slots = sum(len(m) * max(int(lengths[i]) for i in m) for m in samples)
    real = sum(int(lengths[i]) for m in samples for i in m)
    return 1.0 - real / max(slots, 1)


def units_of(batch: TrainBatch) -> list[list[int]]:
    """Rows that must stay together: one per group (consecutive equal group_ids), else single rows."""
    if batch.group_ids is None:
        return [[i] for i in range(len(batch))]
    units: dict[int, list[int]] = {}
    for i, g in enumerate(batch.group_ids.tolist()):
        units.setdefault(g, []).append(i)
    return list(units.values())


def _split_even(units: list[list[int]], count: int) -> list[list[list[int]]]:
    size, extra = divmod(len(units), count)
    out, at = [], 0
    for k in range(count):
        take = size + (1 if k < extra else 0)
        out.append(units[at:at + take])
        at += take
    return out


def _balance(units: list[list[int]], lengths: Tensor, count: int) -> list[list[list[int]]]:
    """Greedy longest-first assignment of units to the least-loaded bin (tokens), so micro-batches cost alike."""
    bins: list[list[list[int]]] = [[] for _ in range(count)]
    load = [0] * count
    for unit in sorted(units, key=lambda u: -sum(int(lengths[i]) for i in u)):
        k = min(range(count), key=lambda j: (load[j], len(bins[j])))
        bins[k].append(unit)
        load[k] += sum(int(lengths[i]) for i in unit)
    return bins


def _pack_rows(units: list[list[int]], lengths: Tensor, capacity: int) -> list[list[int]]:
    """First-fit decreasing: sequences into rows of at most `capacity` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted((i for u in units for i in u), key=lambda i: -int(lengths[i])):
        n = int(lengths[i])
        k = next((k for k, free in enumerate(room) if free >= n), None)
        if k is None:
            rows.append([])
            room.append(capacity)
            k = len(rows) - 1
        rows[k].append(i)
        room[k] -= n
    return rows


def _assemble(batch: TrainBatch, bins: list[list[list[int]]], starts: Tensor, lengths: Tensor, positions: Tensor,
              layout: VisionLayout | None, pad_token_id: int, packed: bool, row_length: int | None = None) -> Layout:
    micro = [_micro_batch(batch, rows, starts, lengths, positions, layout, pad_token_id, packed, row_length)
             for rows in bins]
    return Layout(micro, sum(m.real_tokens for m in micro), sum(m.slot_tokens for m in micro), packed)


def _micro_batch(batch: TrainBatch, rows: list[list[int]], starts: Tensor, lengths: Tensor, positions: Tensor,
                 layout: VisionLayout | None, pad_token_id: int, packed: bool, row_length: int | None) -> MicroBatch:
    full_l = batch.input_ids.shape[1]
    row_len = row_length or max(sum(int(lengths[i]) for i in row) for row in rows)
    samples = [i for row in rows for i in row]
    l_max = int(max(int(lengths[i]) for i in samples))
    n_rows, n = len(rows), len(samples)
    ids = torch.full((n_rows, row_len), pad_token_id, dtype=batch.input_ids.dtype)
    pos = torch.zeros(positions.shape[0], n_rows, row_len, dtype=positions.dtype)
    segment = torch.full((n_rows, row_len), -1, dtype=torch.long)  # which placed sequence owns each slot
    gather = torch.zeros(n, l_max, dtype=torch.long)
    source = torch.zeros(n, l_max, dtype=torch.long)
    valid = torch.arange(l_max).unsqueeze(0) < torch.tensor([int(lengths[i]) for i in samples]).unsqueeze(1)
    k = 0
    for r, row in enumerate(rows):
        offset = int(starts[row[0]]) if row_length is not None else 0  # "none" keeps rows where they are
        for i in row:
            s, n_i = int(starts[i]), int(lengths[i])
            ids[r, offset:offset + n_i] = batch.input_ids[i, s:s + n_i]
            pos[:, r, offset:offset + n_i] = positions[:, i, s:s + n_i]
            segment[r, offset:offset + n_i] = k
            gather[k, :n_i] = r * row_len + offset + torch.arange(n_i)
            source[k, :n_i] = i * full_l + s + torch.arange(n_i)
            offset += n_i
            k += 1
    mask = _block_causal(segment) if packed else (segment >= 0).long()
    return MicroBatch(torch.tensor(samples), ids, mask, pos, gather, source, valid,
                      vision_for_rows(batch, samples, layout), int(lengths[samples].sum()), n_rows * row_len)


def _block_causal(segment: Tensor) -> Tensor:
    """[r, Lp] segment ids -> [r, 1, Lp, Lp] bool: attend within the same sequence, causally; a padding slot
    attends only to itself, so no attention row is empty (an empty row makes SDPA return NaN)."""
    length = segment.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    same = segment.unsqueeze(2) == segment.unsqueeze(1)  # [r, Lp, Lp]
    real = (segment >= 0).unsqueeze(2)
    eye = torch.eye(length, dtype=torch.bool)
    return ((same & real & causal) | eye).unsqueeze(1)

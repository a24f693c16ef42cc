"""TrainBatch checks and micro-batch layouts: padding fractions by hand, groups kept whole, vision slicing."""

import pytest
import torch

from posttrain.learners.batch import TrainBatch, VisionLayout
from posttrain.learners.micro_batches import build_micro_batches


def batch_of_lengths(lengths, width=8, **fields):
    attn = (torch.arange(width) < torch.tensor(lengths).unsqueeze(1)).long()
    ids = (torch.arange(1, width + 1).repeat(len(lengths), 1) + 10 * torch.arange(len(lengths)).unsqueeze(1)) * attn
    return TrainBatch(ids, attn, attn.clone(), **fields)


def positions(batch):
    attn = batch.attention_mask
    return ((attn.cumsum(-1) - 1).clamp(min=0) * attn).unsqueeze(0)


def layout(batch, count, mode, **kw):
    return build_micro_batches(batch, count, mode, positions(batch), **kw)


def test_padding_fraction_by_mode():
    batch = batch_of_lengths([8, 2, 7, 3])  # 20 real tokens
    none = layout(batch, 2, "none")  # 4 rows x 8
    assert none.padding_fraction == pytest.approx(1 - 20 / 32)
    bucket = layout(batch, 2, "bucket")  # [8, 7] -> 2x8, [3, 2] -> 2x3
    assert bucket.slot_tokens == 16 + 6 and bucket.padding_fraction == pytest.approx(1 - 20 / 22)
    packed = layout(batch, 1, "pack", pack_length=10)  # rows [8, 2], [7, 3]: 2 x 10
    assert packed.slot_tokens == 20 and packed.padding_fraction == 0.0


def test_auto_packs_a_mixed_length_batch_and_buckets_a_like_length_one():
    mixed = batch_of_lengths([8, 8, 2, 2])  # one bucket: 20 of 32 slots real, 37.5% padding > 25%
    chosen = layout(mixed, 1, "auto")
    assert chosen.packed and chosen.slot_tokens == layout(mixed, 1, "pack").slot_tokens == 3 * 8  # [8] [8] [2, 2]
    alike = batch_of_lengths([8, 7, 7, 8])  # 30 of 32 real: 6% padding
    chosen = layout(alike, 1, "auto")
    assert not chosen.packed and chosen.slot_tokens == layout(alike, 1, "bucket").slot_tokens == 32
    # two micro-batches: bucketing alone removes the padding ([8, 8] and [2, 2]), so auto keeps it
    assert not layout(mixed, 2, "auto").packed


def test_packed_rows_keep_each_sequence_separate():
    batch = batch_of_lengths([3, 2])
    mb = layout(batch, 1, "pack", pack_length=5).micro_batches[0]
    assert mb.input_ids.tolist() == [[1, 2, 3, 11, 12]]
    assert mb.position_ids[0].tolist() == [[0, 1, 2, 0, 1]]
    mask = mb.attention_mask[0, 0].int().tolist()
    assert mask[3] == [0, 0, 0, 1, 0] and mask[4] == [0, 0, 0, 1, 1] and mask[2] == [1, 1, 1, 0, 0]
    assert mb.take(batch.input_ids).tolist() == [[1, 2, 3], [11, 12, 0]]
    assert mb.unpack(mb.input_ids).tolist() == [[1, 2, 3], [11, 12, 0]]


def test_left_padding_is_compacted():
    attn = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    batch = TrainBatch(torch.tensor([[0, 0, 5, 6], [1, 2, 3, 4]]), attn, attn.clone())
    mb = layout(batch, 1, "bucket").micro_batches[0]
    assert mb.take(batch.input_ids).tolist() == [[1, 2, 3, 4], [5, 6, 0, 0]]  # longest first


def test_groups_are_never_split():
    batch = batch_of_lengths([2, 8, 3, 3, 5, 5], group_ids=torch.tensor([0, 0, 1, 1, 2, 2]))
    for mode in ("bucket", "pack", "none"):
        micro = layout(batch, 3, mode).micro_batches
        owners = [sorted(int(batch.group_ids[i]) for i in mb.sample_index) for mb in micro]
        assert sorted(owners) == [[0, 0], [1, 1], [2, 2]], mode


def test_too_few_rows_for_the_accumulation_steps():
    with pytest.raises(ValueError, match="cannot fill 3 micro-batches"):
        layout(batch_of_lengths([2, 3]), 3, "bucket")


def test_validation_names_the_problem():
    batch = batch_of_lengths([4, 3])
    with pytest.raises(ValueError, match="old_logprobs has shape \\(2, 5\\) but input_ids has \\(2, 8\\)"):
        batch.with_fields(old_logprobs=torch.zeros(2, 5)).validate()
    with pytest.raises(ValueError, match="advantages must have shape \\[B\\]"):
        batch.with_fields(advantages=torch.zeros(3)).validate()
    with pytest.raises(ValueError, match="advantages holds NaN"):
        batch.with_fields(advantages=torch.tensor([0.0, float("nan")])).validate()
    with pytest.raises(ValueError, match="vocab_size 10"):
        batch.validate(vocab_size=10)
    holes = batch.attention_mask.clone()
    holes[0, 1] = 0
    with pytest.raises(ValueError, match="several spans"):
        batch.with_fields(attention_mask=holes, loss_mask=holes).validate()
    with pytest.raises(ValueError, match="loss_mask is set on padding"):
        batch.with_fields(loss_mask=torch.ones(2, 8, dtype=torch.long)).validate()
    with pytest.raises(ValueError, match="cannot be split evenly over 3"):
        batch.shard(0, 3)


def test_vision_inputs_follow_their_rows():
    # merge 2: grid (1, 2, 2) fills 1 placeholder token, (1, 2, 4) fills 2; patches: 4 and 8
    layout_ = VisionLayout(image_token_id=99, video_token_id=98, merge_size=2)
    ids = torch.tensor([[1, 99, 2, 0], [99, 99, 3, 99], [4, 5, 6, 7]])
    attn = (ids != 0).long()
    pixels = torch.arange(16.0).view(16, 1, 1, 1)  # image 0: patches 0-3, image 1: 4-11, image 2: 12-15
    grids = torch.tensor([[1, 2, 2], [1, 2, 4], [1, 2, 2]])
    batch = TrainBatch(ids, attn, attn.clone(), pixel_values=pixels, image_grid_thw=grids)
    picked = batch.select([1, 2], layout_)
    assert picked.image_grid_thw.tolist() == [[1, 2, 4], [1, 2, 2]]
    assert picked.pixel_values.flatten().tolist() == list(range(4, 16))
    assert batch.select([2], layout_).pixel_values is None  # no images: None, not an empty tensor
    with pytest.raises(ValueError, match="do not match the image grids"):
        batch.with_fields(image_grid_thw=torch.tensor([[1, 2, 4], [1, 2, 4]])).select([0], layout_)

import pytest
import torch

from keye_vl.rope import VisionTokenIds, get_rope_index

T, VS, VE, IMG, VID, PAD = 50, 9, 10, 12, 13, 0
TOKENS = VisionTokenIds(image=IMG, video=VID, vision_end=VE)
SEQUENCE = [T, T, VS, IMG, IMG, IMG, IMG, VE, T, VS] + [VID] * 8 + [VE, T]


def rope(ids, image_grid=None, video_grid=None, seconds=None, mask=None):
    ids = torch.tensor([ids]) if not isinstance(ids, torch.Tensor) else ids
    return get_rope_index(ids, TOKENS, spatial_merge_size=2, tokens_per_second=2,
                          image_grid_thw=image_grid, video_grid_thw=video_grid, second_per_grid_ts=seconds,
                          attention_mask=mask)


def test_text_image_and_two_step_video_positions_by_hand():
    positions, delta = rope(SEQUENCE, torch.tensor([[1, 4, 4]]), torch.tensor([[2, 4, 4]]), [0.5])
    t, h, w = positions[:, 0].tolist()
    # 3 text tokens; image (merged 2x2) at offset 3; 3 text; video 2 frames x 2x2 at offset 8 (0.5 s/frame x 2
    # tokens/s -> t step 1); then text from max + 1.
    assert t == [0, 1, 2, 3, 3, 3, 3, 5, 6, 7, 8, 8, 8, 8, 9, 9, 9, 9, 10, 11]
    assert h == [0, 1, 2, 3, 3, 4, 4, 5, 6, 7, 8, 8, 9, 9, 8, 8, 9, 9, 10, 11]
    assert w == [0, 1, 2, 3, 4, 3, 4, 5, 6, 7, 8, 9, 8, 9, 8, 9, 8, 9, 10, 11]
    assert delta.tolist() == [[11 + 1 - len(SEQUENCE)]]


def test_video_timestamps_scale_the_temporal_axis():
    positions, _ = rope(SEQUENCE, torch.tensor([[1, 4, 4]]), torch.tensor([[2, 4, 4]]), [1.0])
    t = positions[0, 0].tolist()
    assert t[10:18] == [8, 8, 8, 8, 10, 10, 10, 10]  # 1 s per frame x 2 tokens/s
    assert t[18:] == [11, 12]


def test_text_only_is_plain_arange():
    positions, delta = rope([T] * 5)
    assert positions[:, 0].tolist() == [[0, 1, 2, 3, 4]] * 3 and delta.item() == 0


def test_left_padding_is_skipped():
    ids = torch.tensor([[PAD, PAD, T, VS, IMG, IMG, IMG, IMG, VE, T]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1, 1]])
    positions, _ = rope(ids, torch.tensor([[1, 4, 4]]), mask=mask)
    assert positions[0, 0].tolist() == [1, 1, 0, 1, 2, 2, 2, 2, 4, 5]
    assert positions[2, 0].tolist() == [1, 1, 0, 1, 2, 3, 2, 3, 4, 5]


def test_images_are_consumed_in_order_across_the_batch():
    row = [VS, IMG, IMG, IMG, IMG, VE]
    wide = [VS] + [IMG] * 8 + [VE]
    ids = torch.tensor([row + [PAD] * 4, wide])
    mask = torch.tensor([[1] * 6 + [0] * 4, [1] * 10])
    positions, _ = rope(ids, torch.tensor([[1, 4, 4], [1, 4, 8]]), mask=mask)
    assert positions[2, 1].tolist() == [0, 1, 2, 3, 4, 1, 2, 3, 4, 5]


def test_more_placeholders_than_images():
    with pytest.raises(ValueError, match="more image placeholder blocks than images"):
        rope([VS, IMG, IMG, IMG, IMG, VE, VS, IMG, IMG, IMG, IMG, VE], torch.tensor([[1, 4, 4]]))


def test_more_images_than_placeholders():
    with pytest.raises(ValueError, match="2 images were given but the text has 1"):
        rope([VS, IMG, IMG, IMG, IMG, VE], torch.tensor([[1, 4, 4], [1, 4, 4]]))


def test_prompt_truncated_inside_a_vision_block():
    with pytest.raises(ValueError, match="cut inside a vision block"):
        rope([T, VS, IMG, IMG], torch.tensor([[1, 4, 4]]))


def test_block_of_the_wrong_size():
    with pytest.raises(ValueError, match=r"needs 4 <\|image_pad\|> tokens but its block holds 3"):
        rope([VS, IMG, IMG, IMG, VE, T], torch.tensor([[1, 4, 4]]))

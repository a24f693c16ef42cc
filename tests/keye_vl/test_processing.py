import numpy as np
import pytest
import torch
from PIL import Image

from keye_vl.image_processing import VisionProcessingConfig, process_images, sample_frame_indices, smart_resize
from keye_vl.processing import KeyeVLProcessor

EIGHT_B = VisionProcessingConfig()


@pytest.mark.parametrize("size, expected", [
    ((60, 100), (56, 112)),            # rounded to multiples of 28
    ((28, 28), (56, 56)),              # raised to min_pixels = 4 * 28 * 28
    ((1000, 1000), (1008, 1008)),
])
def test_smart_resize(size, expected):
    assert smart_resize(*size, 28, EIGHT_B.min_pixels, EIGHT_B.max_pixels) == expected


def test_smart_resize_respects_max_pixels():
    h, w = smart_resize(4000, 3000, 28, 4 * 784, 64 * 784)
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 64 * 784 and abs(h / w - 4 / 3) < 0.2


def test_image_token_count_is_thw_over_4(tiny_processor):
    text = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n"
    batch = tiny_processor([text], images=[Image.new("RGB", (100, 60))])
    assert batch["image_grid_thw"].tolist() == [[1, 4, 8]]
    assert int((batch["input_ids"] == 12).sum()) == 1 * 4 * 8 // 4
    assert batch["pixel_values"].shape == (32, 3, 14, 14)


def test_pixels_are_raster_order_and_normalised():
    array = np.zeros((28, 56, 3), np.uint8)
    array[:14, 14:28] = 255  # patch (row 0, column 1) white, the rest black
    data = process_images([array], VisionProcessingConfig(min_pixels=28 * 28))
    assert data.grid_thw.tolist() == [[1, 2, 4]]
    assert data.pixel_values[1].min() == 1.0 and data.pixel_values[0].max() == -1.0
    assert data.pixel_values[4].max() == -1.0


def test_video_sampling_at_2_fps_with_frame_limits():
    cfg = VisionProcessingConfig(video_min_frames=4, video_max_frames=10)
    assert len(sample_frame_indices(30, 10.0, cfg)) == 6         # 3 s at 2 fps
    assert len(sample_frame_indices(5, 10.0, cfg)) == 4          # at least 4
    assert len(sample_frame_indices(300, 10.0, cfg)) == 10       # at most 10
    assert len(sample_frame_indices(35, 10.0, cfg)) % 2 == 0     # always even
    tight = VisionProcessingConfig(video_max_tokens=1024, video_min_tokens_per_frame=128)
    assert len(sample_frame_indices(3000, 10.0, tight)) == 8     # the token budget caps frames


def test_video_budget_per_frame(tiny_processor):
    frames = np.zeros((40, 224, 224, 3), np.uint8)
    text = "<|vision_start|><|video_pad|><|vision_end|>"
    batch = tiny_processor([text], videos=[{"video": frames, "fps": 10}])
    t, h, w = batch["video_grid_thw"][0].tolist()
    assert t == 8 and t * h * w // 4 <= 128
    assert batch["second_per_grid_ts"].tolist() == [pytest.approx(0.5)]


@pytest.mark.parametrize("size, message", [
    ((10, 300), "shorter side must be at least 28 px"),
    ((30, 6100), "aspect ratio 203:1"),
])
def test_bad_images_are_explained(tiny_processor, size, message):
    text = "<|vision_start|><|image_pad|><|vision_end|>"
    with pytest.raises(ValueError, match=message):
        tiny_processor([text], images=[Image.new("RGB", size)])


def test_placeholder_count_must_match_images(tiny_processor):
    text = "<|vision_start|><|image_pad|><|vision_end|>" * 2
    with pytest.raises(ValueError, match="2 <\\|image_pad\\|> placeholders but 1 images were given"):
        tiny_processor([text], images=[Image.new("RGB", (56, 56))])
    with pytest.raises(ValueError, match="0 <\\|image_pad\\|> placeholders but 1 images"):
        tiny_processor(["no placeholder"], images=[Image.new("RGB", (56, 56))])


def test_unsupported_image_type(tiny_processor):
    with pytest.raises(TypeError, match="image 0 must be a PIL image"):
        tiny_processor(["<|vision_start|><|image_pad|><|vision_end|>"], images=[torch.zeros(3, 56, 56)])


def test_processor_round_trip(tmp_path, tiny_processor):
    tiny_processor.save_pretrained(tmp_path)
    again = KeyeVLProcessor.from_pretrained(tmp_path)
    assert again.vision == tiny_processor.vision
    messages = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (90, 70))},
                                             {"type": "text", "text": "Color?"}]}]
    a = tiny_processor.process_conversations([messages], mode="no_think")
    b = again.process_conversations([messages], mode="no_think")
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])


def test_public_preprocessor_file_is_read(tmp_path, tiny_tokenizer):
    tiny_tokenizer.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(
        '{"min_pixels": 3136, "max_pixels": 1003520, "patch_size": 14, "merge_size": 2, '
        '"temporal_patch_size": 1, "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "SiglipImageProcessor"}')
    processor = KeyeVLProcessor.from_pretrained(tmp_path)
    assert (processor.vision.min_pixels, processor.vision.max_pixels) == (3136, 1003520)

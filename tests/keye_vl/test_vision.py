import pytest
import torch
from transformers import SiglipVisionConfig, SiglipVisionModel

from keye_vl.configuration import KeyeVisionConfig
from keye_vl.projector import merge_patches
from keye_vl.vision import KeyeVisionModel

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=56)


def image_to_patches(image: torch.Tensor, patch: int = 14) -> torch.Tensor:
    c, h, w = image.shape
    return image.reshape(c, h // patch, patch, w // patch, patch).permute(1, 3, 0, 2, 4).reshape(-1, c, patch, patch)


@pytest.fixture()
def vision():
    torch.manual_seed(0)
    return KeyeVisionModel(KeyeVisionConfig(**SMALL)).eval()


def test_without_rope_equals_transformers_siglip_at_native_size():
    torch.manual_seed(0)
    reference = SiglipVisionModel(SiglipVisionConfig(**SMALL, patch_size=14, vision_use_head=False)).eval()
    ours = KeyeVisionModel(KeyeVisionConfig(**SMALL, use_2d_rope=False)).eval()
    from keye_vl.weights import init_vision_from_siglip

    class Holder(torch.nn.Module):  # init_vision_from_siglip takes the full model; give it `visual`
        visual = ours

    init_vision_from_siglip(Holder(), reference)
    image = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        expected = reference(pixel_values=image).last_hidden_state[0]
        got = ours(image_to_patches(image[0]), torch.tensor([[1, 4, 4]]))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_rope_changes_the_output(vision):
    patches = torch.randn(16, 3, 14, 14)
    grid = torch.tensor([[1, 4, 4]])
    with torch.no_grad():
        with_rope = vision(patches, grid)
        vision.vision_model.config.use_2d_rope = False
        without = vision(patches, grid)
    assert (with_rope - without).abs().max() > 1e-3


def test_images_do_not_attend_to_each_other(vision):
    a, b = torch.randn(16, 3, 14, 14), torch.randn(24, 3, 14, 14)
    ga, gb = torch.tensor([[1, 4, 4]]), torch.tensor([[1, 4, 6]])
    with torch.no_grad():
        together = vision(torch.cat([a, b]), torch.cat([ga, gb]))
        alone = torch.cat([vision(a, ga), vision(b, gb)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_video_frames_attend_to_each_other(vision):
    frames = torch.randn(2 * 16, 3, 14, 14)
    with torch.no_grad():
        as_video = vision(frames, torch.tensor([[2, 4, 4]]))
        as_images = vision(frames, torch.tensor([[1, 4, 4], [1, 4, 4]]))
    assert (as_video - as_images).abs().max() > 1e-4


def test_position_table_is_interpolated_to_the_grid(vision):
    embeddings = vision.vision_model.embeddings
    native = embeddings.interpolated_positions(4, 4)
    torch.testing.assert_close(native, embeddings.position_embedding.weight)
    # bilinear, align_corners=False, 4 -> 2 rows: output row i samples source row 2i + 0.5
    table = embeddings.position_embedding.weight.detach().view(4, 4, 64)
    resized = embeddings.interpolated_positions(2, 4).detach().view(2, 4, 64)
    torch.testing.assert_close(resized[0], (table[0] + table[1]) / 2)
    torch.testing.assert_close(resized[1], (table[2] + table[3]) / 2)


def test_pixels_that_do_not_match_the_grid_are_explained(vision):
    with pytest.raises(ValueError, match="describe 16 patches but pixel_values holds 12"):
        vision(torch.randn(12, 3, 14, 14), torch.tensor([[1, 4, 4]]))
    with pytest.raises(ValueError, match="multiples of spatial_merge_size"):
        vision(torch.randn(15, 3, 14, 14), torch.tensor([[1, 3, 5]]))
    with pytest.raises(ValueError, match=r"\[num_patches, 3, 14, 14\]"):
        vision(torch.randn(16, 3, 28, 28), torch.tensor([[1, 4, 4]]))


def test_merge_groups_2x2_neighbours_row_offset_outer():
    # a 1x4x4 grid of patches whose features are their raster index
    features = torch.arange(16.0).view(16, 1)
    merged = merge_patches(features, torch.tensor([[1, 4, 4]]), 2)
    assert merged.tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    two_frames = merge_patches(torch.arange(8.0).view(8, 1), torch.tensor([[2, 2, 2]]), 2)
    assert two_frames.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]

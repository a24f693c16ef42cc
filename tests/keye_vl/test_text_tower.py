"""The stage-0 SigLIP towers: pooling per image segment, SigLIP's text layout, initial t' and b, files."""

import math

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from keye_vl.configuration import KeyeVisionConfig
from keye_vl.text_tower import (ImageTextScorer, KeyeSiglip, SiglipTowers, encode_texts, load_visual,
                                text_tower_config)
from keye_vl.weight_files import copy_with_replaced, load_prefixed

VISION = KeyeVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                          image_size=56, patch_size=14)


@pytest.fixture()
def towers(tiny_tokenizer):
    torch.manual_seed(0)
    config = text_tower_config(VISION, tiny_tokenizer, {"num_hidden_layers": 1, "max_position_embeddings": 16})
    return SiglipTowers(VISION, config).eval()


def test_initial_logit_scale_and_bias_are_siglips(towers):
    assert towers.logit_scale.item() == pytest.approx(math.log(10.0))
    assert towers.logit_bias.item() == -10.0
    x = torch.randn(3, 32)  # identical embeddings: cos 1, so the logit is exactly t + b = 0
    assert torch.allclose(towers.logits(x, x).diagonal(), torch.zeros(3), atol=1e-5)


def test_each_image_is_pooled_over_its_own_segment_only(towers):
    sizes = [16, 4, 16]  # patches per image (grids 4x4, 2x2, 4x4): one batched call for the two equal lengths
    grids = torch.tensor([[1, 4, 4], [1, 2, 2], [1, 4, 4]])
    features = torch.randn(sum(sizes), 32)
    with torch.no_grad():
        packed = towers.image_embeds(features, grids)
        alone = [towers.head(segment[None])[0] for segment in features.split(sizes)]
    assert packed.shape == (3, 32)
    for got, expected in zip(packed, alone):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(packed[0], packed[2])  # different patches, different embeddings


def test_captions_are_padded_to_a_fixed_length_after_eos(tiny_tokenizer):
    ids = encode_texts(tiny_tokenizer, ["A red circle at the centre.", "a " * 40], length=16)
    assert ids.shape == (2, 16)
    n = len(tiny_tokenizer("A red circle at the centre.", add_special_tokens=False)["input_ids"])
    eos, pad = tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id
    assert ids[0, n] == eos and (ids[0, n + 1:] == pad).all()
    assert ids[1, -1] == eos  # truncated, still ends with EOS


def test_text_tower_is_as_wide_as_the_vision_tower_and_rejects_unknown_keys(tiny_tokenizer):
    config = text_tower_config(VISION, tiny_tokenizer)
    assert (config.hidden_size, config.projection_size, config.vocab_size) == (32, 32, len(tiny_tokenizer))
    with pytest.raises(ValueError, match=r"text_tower keys \['projection_size'\] are not settable"):
        text_tower_config(VISION, tiny_tokenizer, {"projection_size": 8})


def test_towers_save_and_load(tmp_path, towers):
    towers.save(tmp_path)
    again = SiglipTowers.load(tmp_path)
    for (name, a), (_, b) in zip(towers.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError, match="not a SigLIP towers config"):
        SiglipTowers.load(tmp_path / "missing")


def test_save_pretrained_replaces_visual_only_and_the_scorer_reads_it(tmp_path, tiny_model_dir, tiny_tokenizer):
    model = KeyeSiglip.from_model_dir(tiny_model_dir, tiny_tokenizer, {"num_hidden_layers": 1})
    with torch.no_grad():
        for p in model.visual.parameters():
            p.add_(0.5)
    model.save_pretrained(tmp_path / "out")
    before, after = load_prefixed(tiny_model_dir, ""), load_prefixed(tmp_path / "out", "")
    assert before.keys() == after.keys()
    for name in before:
        same = torch.equal(before[name], after[name])
        assert same != (name.startswith("visual.") and "packing" not in name), name
    scorer = ImageTextScorer.load(tmp_path / "out", tmp_path / "out" / "siglip")
    images = [Image.new("RGB", (224, 224), c) for c in ("red", "blue")]
    texts = ["A red square.", "A blue circle."]
    scores = scorer.score(images, texts)
    assert scores.shape == (2,) and ((scores > 0) & (scores < 1)).all()
    torch.testing.assert_close(scores, torch.sigmoid(scorer.logits(images, texts).diagonal()))
    with torch.no_grad():  # the reloaded vision tower is the trained one
        torch.testing.assert_close(load_visual(tmp_path / "out").state_dict(), model.visual.state_dict())


def test_copy_with_replaced_refuses_new_names_and_shapes(tmp_path):
    save_file({"a": torch.zeros(2), "b": torch.ones(3, dtype=torch.bfloat16)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(KeyError, match="holds no tensors named"):
        copy_with_replaced(tmp_path, tmp_path / "o1", {"c": torch.zeros(1)})
    with pytest.raises(ValueError, match="never shapes"):
        copy_with_replaced(tmp_path, tmp_path / "o2", {"a": torch.zeros(3)})
    copy_with_replaced(tmp_path, tmp_path / "o3", {"b": torch.full((3,), 2.0)})
    with safe_open(tmp_path / "o3" / "model.safetensors", framework="pt") as f:
        assert f.get_tensor("b").dtype == torch.bfloat16 and f.get_tensor("b").tolist() == [2.0] * 3
        assert torch.equal(f.get_tensor("a"), torch.zeros(2))
    assert (tmp_path / "o3" / "config.json").read_text() == "{}"

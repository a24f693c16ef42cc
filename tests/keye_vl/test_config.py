import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig

import keye_vl.modeling  # noqa: F401  (registers the Auto classes)
from keye_vl.configuration import KeyeVLConfig
from keye_vl.weights import count_preset_parameters

PUBLIC_CONFIG = Path(__file__).resolve().parents[1] / "data" / "keye-vl-8b-preview.config.json"


@pytest.fixture()
def public_dir(tmp_path):
    (tmp_path / "config.json").write_text(PUBLIC_CONFIG.read_text())
    return tmp_path


def test_public_config_reads_unchanged(public_dir):
    config = AutoConfig.from_pretrained(str(public_dir))
    assert isinstance(config, KeyeVLConfig)
    text, vision = config.text_config, config.vision_config
    assert (text.num_hidden_layers, text.hidden_size, text.intermediate_size) == (36, 4096, 12288)
    assert (text.num_attention_heads, text.num_key_value_heads, text.head_dim) == (32, 8, 128)
    assert text.vocab_size == 151936 and text.max_position_embeddings == 40960
    assert text.mrope_section == [16, 24, 24] and text.rope_parameters["rope_theta"] == 1_000_000
    assert (vision.num_hidden_layers, vision.hidden_size, vision.num_attention_heads) == (27, 1152, 16)
    assert (vision.intermediate_size, vision.patch_size, vision.tokens_per_second) == (4304, 14, 2)
    assert (config.image_token_id, config.video_token_id, config.vision_start_token_id) == (151655, 151656, 151652)


def test_public_config_builds_the_same_model_as_the_preset(public_dir):
    public = AutoConfig.from_pretrained(str(public_dir))
    assert count_preset_parameters(public) == count_preset_parameters(KeyeVLConfig.from_preset("keye-vl-8b"))


def test_8b_preset_parameter_count_on_meta_device():
    # KEYE.md: 8,696,828,736 in the public checkpoint, of which the vision pooling head (15,238,352) and the
    # packing_position_embedding (37,748,736) are never read and not built.
    counts = count_preset_parameters(KeyeVLConfig.from_preset("keye-vl-8b"))
    assert counts["model"] == 7_568_405_504
    assert counts["lm_head"] == 622_329_856
    assert counts["mlp_AR"] == 40_119_040
    assert counts["visual"] == 465_974_336 - 15_238_352 - 37_748_736
    assert counts["total"] == 8_696_828_736 - 15_238_352 - 37_748_736


def test_tiny_preset_round_trips_through_json(tmp_path, tiny_config):
    tiny_config.save_pretrained(tmp_path)
    again = KeyeVLConfig.from_pretrained(str(tmp_path))
    assert again.text_config.to_dict() == tiny_config.text_config.to_dict()
    assert again.vision_config.to_dict() == tiny_config.vision_config.to_dict()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "Keye"


def test_tiny_preset_is_small_and_vllm_servable(tiny_config):
    assert tiny_config.text_config.head_dim >= 32
    assert count_preset_parameters(tiny_config)["total"] < 3_000_000


def test_unknown_preset_lists_choices():
    with pytest.raises(ValueError, match="keye-tiny"):
        KeyeVLConfig.from_preset("keye-huge")


def test_mrope_section_must_cover_head_dim(tiny_config):
    from keye_vl.modeling import KeyeForConditionalGeneration

    config = KeyeVLConfig.from_dict(tiny_config.to_dict())
    config.text_config.rope_parameters["mrope_section"] = [4, 4, 4]
    with pytest.raises(ValueError, match="head_dim/2 = 16"):
        with torch.device("meta"):
            KeyeForConditionalGeneration(config)

"""Keye-VL through transformers' own entry points, as a user meets it: Auto classes, the multimodal
`apply_chat_template`, `generate`, and checkpoints in the public Keye-VL layout."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import (AutoConfig, AutoImageProcessor, AutoModel, AutoModelForCausalLM,
                          AutoModelForImageTextToText, AutoProcessor)

from keye_protocol import chat
import keye_vl  # noqa: F401  (importing the package is all a user needs)
from keye_vl.image_processing import KeyeImageProcessor
from keye_vl.processing import KeyeVLProcessor

PUBLIC_CONFIG = Path(__file__).resolve().parents[1] / "data" / "keye-vl-8b-preview.config.json"
PACKING = "visual.vision_model.embeddings.packing_position_embedding.weight"


def picture_question(color: str = "red") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (70, 56), color)},
                                         {"type": "text", "text": "What color is it?"}]}]


def video_question(fps: float) -> list[dict]:
    frames = [Image.new("RGB", (56, 56), c) for c in ("red", "blue", "green", "white")]
    return [{"role": "user", "content": [{"type": "video", "video": frames, "fps": fps},
                                         {"type": "text", "text": "Which color comes last?"}]}]


@pytest.fixture(scope="module")
def auto_loaded(tiny_model_dir):
    return AutoProcessor.from_pretrained(tiny_model_dir), AutoModelForImageTextToText.from_pretrained(tiny_model_dir)


def test_auto_classes_resolve_every_part(tiny_model_dir, caplog):
    with caplog.at_level(logging.WARNING):
        assert type(AutoConfig.from_pretrained(tiny_model_dir)).__name__ == "KeyeVLConfig"
        for auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText):
            assert type(auto_class.from_pretrained(tiny_model_dir)).__name__ == "KeyeForConditionalGeneration"
        assert isinstance(AutoProcessor.from_pretrained(tiny_model_dir), KeyeVLProcessor)
        assert isinstance(AutoImageProcessor.from_pretrained(tiny_model_dir), KeyeImageProcessor)
    assert "You are using a model of type" not in caplog.text


def test_importing_the_package_alone_registers_keye(tiny_model_dir):
    """In a fresh interpreter (this one has imported every module): `import keye_vl`, then the Auto classes."""
    import subprocess
    import sys

    script = ("import keye_vl\n"
              "from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor\n"
              f"d = {str(tiny_model_dir)!r}\n"
              "print(*(type(auto.from_pretrained(d)).__name__ for auto in (AutoConfig, AutoProcessor, "
              "AutoModelForImageTextToText, AutoModelForCausalLM)))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["KeyeVLConfig", "KeyeVLProcessor", "KeyeForConditionalGeneration",
                                   "KeyeForConditionalGeneration"], done.stderr[-2000:]
    assert "You are using a model of type" not in done.stderr


def test_chat_template_text_equals_the_toolkits_rendering(auto_loaded):
    processor, _ = auto_loaded
    messages = picture_question()
    for mode in ("think", "no_think", "auto_think", "agentic"):
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, mode=mode)
        assert text == chat.render_chat(messages, mode)
        assert text.endswith(f"{chat.MODE_SUFFIX[chat.parse_mode(mode)]}<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("messages", [picture_question(), video_question(fps=2.0)], ids=["image", "video"])
def test_tokenized_chat_template_equals_process_conversations(auto_loaded, messages):
    processor, _ = auto_loaded
    standard = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                             return_dict=True, mode="think")
    ours = processor.process_conversations([messages], mode="think")
    assert sorted(standard.keys()) == sorted(ours.keys())
    for key in ours:
        assert torch.equal(standard[key], ours[key]), key


def test_generate_from_the_standard_inputs(auto_loaded):
    processor, model = auto_loaded
    inputs = processor.apply_chat_template(picture_question(), add_generation_prompt=True, tokenize=True,
                                           return_dict=True, mode="no_think")
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    with torch.no_grad():  # greedy generation continues with the argmax of a full forward
        logits = model(**inputs).logits[0, -1]
    assert out.shape == (1, inputs["input_ids"].shape[1] + 6)
    assert out[0, inputs["input_ids"].shape[1]] == logits.argmax()


def test_video_timing_is_read_under_its_official_name(auto_loaded):
    processor, model = auto_loaded
    # 4 frames shown for 4 s or 8 s: both are sampled to the tiny preset's 8 frames, 0.5 s or 1 s apart
    fast, slow = (processor.process_conversations([video_question(fps)]) for fps in (1.0, 0.5))
    assert (fast["second_per_grid_ts"].item(), slow["second_per_grid_ts"].item()) == (0.5, 1.0)
    assert torch.equal(slow["input_ids"], fast["input_ids"]) and torch.equal(slow["pixel_values_videos"],
                                                                               fast["pixel_values_videos"])
    with torch.no_grad():
        assert not torch.allclose(model(**slow).logits, model(**fast).logits)  # the timing moves 3-D positions


def test_unknown_forward_arguments_are_refused(auto_loaded):
    processor, model = auto_loaded
    inputs = dict(processor.process_conversations([video_question(2.0)]))
    inputs["video_second_per_grid"] = inputs.pop("second_per_grid_ts")  # the toolkit's old name
    with pytest.raises(TypeError, match=r"unexpected arguments \['video_second_per_grid'\]"):
        model(**inputs)


def test_unknown_processor_arguments_are_refused(auto_loaded):
    processor, _ = auto_loaded
    with pytest.raises(TypeError, match=r"unsupported arguments \['do_resize'\]"):
        processor(text=["hi"], do_resize=False)


def test_saved_config_is_the_public_flat_layout(tiny_model_dir):
    saved = json.loads((tiny_model_dir / "config.json").read_text())
    public = json.loads(PUBLIC_CONFIG.read_text())
    assert saved["architectures"] == public["architectures"] == ["KeyeForConditionalGeneration"]
    assert saved["model_type"] == public["model_type"] == "Keye"
    assert "text_config" not in saved
    assert set(public) - set(saved) <= {"_commit_hash", "auto_map", "initializer_factor"}
    assert saved["rope_scaling"] == {"type": "mrope", "mrope_section": [4, 6, 6]}
    assert (saved["hidden_size"], saved["num_hidden_layers"], saved["vision_config"]["hidden_size"]) == (128, 4, 64)
    assert saved["vision_config"]["model_type"] == public["vision_config"]["model_type"]


def test_saved_tensors_include_the_packing_table(tiny_model_dir):
    with safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        assert f.get_tensor(PACKING).shape == (32768, 64)
    assert {name.split(".")[0] for name in names} == {"visual", "mlp_AR", "model", "lm_head"}


def test_public_layout_round_trips_with_identical_logits(tmp_path, tiny_model_dir, auto_loaded):
    """Our save is read as the public files are: a config.json written from the public file (sizes changed to
    the tiny model's) and weights with the pooling head the public checkpoint also carries."""
    processor, model = auto_loaded
    public_dir = tmp_path / "public"
    shutil.copytree(tiny_model_dir, public_dir)
    ours = json.loads((tiny_model_dir / "config.json").read_text())
    public = json.loads(PUBLIC_CONFIG.read_text())
    sizes = {k: ours[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                  "num_attention_heads", "num_key_value_heads", "head_dim", "max_window_layers",
                                  "max_position_embeddings", "rope_theta", "rope_scaling", "bos_token_id", "pad_token_id",
                                  "eos_token_id", "vision_start_token_id", "vision_end_token_id", "vision_token_id",
                                  "image_token_id", "video_token_id", "torch_dtype")}
    vision = {k: ours["vision_config"][k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                     "num_attention_heads", "image_size")}
    public.update(sizes, vision_config={**public["vision_config"], **vision})
    (public_dir / "config.json").write_text(json.dumps(public))
    tensors = load_file(str(tiny_model_dir / "model.safetensors"))
    tensors["visual.vision_model.head.probe"] = torch.zeros(1, 1, 64)
    save_file(tensors, str(public_dir / "model.safetensors"), metadata={"format": "pt"})

    again = AutoModelForImageTextToText.from_pretrained(public_dir)
    inputs = processor.process_conversations([picture_question()], mode="think")
    with torch.no_grad():
        assert torch.equal(again(**inputs).logits, model(**inputs).logits)
    resaved = tmp_path / "resaved"
    again.save_pretrained(resaved)
    assert set(load_file(str(resaved / "model.safetensors"))) == set(tensors) - {"visual.vision_model.head.probe"}


def test_checkpoints_saved_before_the_public_layout_still_load(tmp_path, tiny_model_dir, auto_loaded):
    """The toolkit's earlier checkpoints nest the decoder under text_config, lack the packing table and wrote
    the processor as a bare preprocessor file."""
    processor, model = auto_loaded
    old = tmp_path / "old"
    shutil.copytree(tiny_model_dir, old)
    for name in ("processor_config.json", "chat_template.jinja"):
        (old / name).unlink()
    (old / "preprocessor_config.json").write_text(
        json.dumps({"processor_class": "KeyeVLProcessor", **processor.vision.model_dump()}))
    assert AutoProcessor.from_pretrained(old).vision == processor.vision
    config = model.config.to_dict()
    (old / "config.json").write_text(json.dumps({**config, "architectures": ["KeyeVLForConditionalGeneration"]}))
    tensors = load_file(str(tiny_model_dir / "model.safetensors"))
    del tensors[PACKING]
    save_file(tensors, str(old / "model.safetensors"), metadata={"format": "pt"})
    loaded = AutoModelForImageTextToText.from_pretrained(old)
    inputs = processor.process_conversations([picture_question("blue")])
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)
    assert not loaded.visual.vision_model.embeddings.packing_position_embedding.weight.any()

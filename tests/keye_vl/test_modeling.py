import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from keye_vl import KeyeForConditionalGeneration
from keye_vl.processing import KeyeVLProcessor


def image(w, h, color="red"):
    return Image.new("RGB", (w, h), color)


def conversation(*items, text="How many?"):
    return [{"role": "user", "content": [*items, {"type": "text", "text": text}]}]


def train_step(model, batch):
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    out = model(**batch, labels=labels)
    out.loss.backward()
    return out


def grad_norm(module):
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_text_only_forward_backward(tiny_model, tiny_processor):
    batch = tiny_processor.process_conversations([conversation(text="What is 2 + 3?")], mode="think")
    out = train_step(tiny_model.train(), batch)
    assert out.logits.shape == (*batch["input_ids"].shape, 1032)
    assert np.isclose(out.loss.item(), np.log(1032), atol=0.5)  # a fresh model is near uniform
    assert grad_norm(tiny_model.model) > 0 and grad_norm(tiny_model.visual) == 0


def test_one_image_forward_backward_reaches_the_vision_tower(tiny_model, tiny_processor):
    batch = tiny_processor.process_conversations([conversation({"type": "image", "image": image(100, 60)})])
    assert batch["image_grid_thw"].tolist() == [[1, 4, 8]]
    train_step(tiny_model.train(), batch)
    assert grad_norm(tiny_model.visual) > 0 and grad_norm(tiny_model.mlp_AR) > 0


def test_several_images_of_different_sizes_in_a_batch(tiny_model, tiny_processor):
    convs = [conversation({"type": "image", "image": image(56, 56)}, {"type": "image", "image": image(224, 112)}),
             conversation({"type": "image", "image": image(300, 90, "blue")})]
    batch = tiny_processor.process_conversations(convs)
    assert len(batch["image_grid_thw"]) == 3
    out = train_step(tiny_model.train(), batch)
    assert torch.isfinite(out.loss)


def test_video_forward_backward(tiny_model, tiny_processor):
    frames = np.random.default_rng(0).integers(0, 255, (8, 56, 84, 3), dtype=np.uint8)
    batch = tiny_processor.process_conversations([conversation({"type": "video", "video": frames, "fps": 4})])
    assert batch["video_grid_thw"][0, 0].item() == 4  # 2 s at 2 fps
    assert batch["second_per_grid_ts"].tolist() == [0.5]
    train_step(tiny_model.train(), batch)
    assert grad_norm(tiny_model.visual) > 0


def test_images_change_the_answer_distribution(tiny_model, tiny_processor):
    red = tiny_processor.process_conversations([conversation({"type": "image", "image": image(56, 56, "red")})])
    blue = tiny_processor.process_conversations([conversation({"type": "image", "image": image(56, 56, "blue")})])
    with torch.no_grad():
        assert (tiny_model(**red).logits[0, -1] - tiny_model(**blue).logits[0, -1]).abs().max() > 1e-4


def test_cached_generation_with_an_image_equals_full_recompute(tiny_model, tiny_processor):
    batch = tiny_processor.process_conversations([conversation({"type": "image", "image": image(112, 84)})])
    with torch.no_grad():
        out = tiny_model.generate(**batch, max_new_tokens=6, do_sample=False, output_scores=True,
                                  return_dict_in_generate=True)
        prompt_len = batch["input_ids"].shape[1]
        full = tiny_model(input_ids=out.sequences, pixel_values=batch["pixel_values"],
                          image_grid_thw=batch["image_grid_thw"]).logits
    for step, scores in enumerate(out.scores):
        torch.testing.assert_close(scores[0], full[0, prompt_len - 1 + step], atol=1e-4, rtol=1e-4)


def test_left_padded_batch_generates_what_each_prompt_generates_alone(tiny_model, tiny_processor):
    convs = [conversation({"type": "image", "image": image(56, 56)}, text="Short?"),
             conversation({"type": "image", "image": image(168, 112)}, text="A much longer question here?")]
    with torch.no_grad():
        batched = tiny_model.generate(**tiny_processor.process_conversations(convs), max_new_tokens=5,
                                      do_sample=False)[:, -5:]
        alone = [tiny_model.generate(**tiny_processor.process_conversations([c]), max_new_tokens=5,
                                     do_sample=False)[0, -5:] for c in convs]
    assert batched.tolist() == [a.tolist() for a in alone]


def test_image_in_the_middle_of_an_assistant_turn(tiny_model, tiny_processor):
    """Agentic rollouts continue an assistant turn after a sandbox image; the prompt stays open."""
    messages = conversation({"type": "image", "image": image(56, 56)}) + [
        {"role": "assistant", "content": [{"type": "text", "text": "<think>crop it\n<sandbox_output>"},
                                          {"type": "image", "image": image(112, 56, "green")},
                                          {"type": "text", "text": "</sandbox_output>"}]}]
    batch = tiny_processor.process_conversations([messages], continue_final_message=True)
    text = tiny_processor.decode(batch["input_ids"][0])
    assert text.endswith("</sandbox_output>") and len(batch["image_grid_thw"]) == 2
    with torch.no_grad():
        out = tiny_model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == batch["input_ids"].shape[1] + 3


def test_save_and_load_give_identical_logits(tmp_path, tiny_model, tiny_processor):
    batch = tiny_processor.process_conversations([conversation({"type": "image", "image": image(84, 56)})])
    tiny_model.save_pretrained(tmp_path)
    again = KeyeForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        assert torch.equal(tiny_model(**batch).logits, again(**batch).logits)


def test_checkpoint_with_the_unused_public_vision_parts_loads(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["visual.vision_model.head.probe"] = torch.zeros(1, 1, 64)
    weights["visual.vision_model.head.mlp.fc1.weight"] = torch.zeros(256, 64)
    weights["visual.vision_model.embeddings.packing_position_embedding.weight"] = torch.zeros(32768, 64)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    again = KeyeForConditionalGeneration.from_pretrained(str(tmp_path))
    assert torch.equal(again.lm_head.weight, tiny_model.lm_head.weight)


def test_placeholder_and_feature_mismatch_is_explained(tiny_model, tiny_processor):
    batch = tiny_processor.process_conversations([conversation({"type": "image", "image": image(56, 56)})])
    ids = batch["input_ids"]
    pad = tiny_model.config.image_token_id
    extra = torch.cat([ids, torch.full((1, 1), pad)], dim=1)
    with pytest.raises(ValueError, match="5 <\\|image_pad\\|> tokens but the images give 4 features"):
        tiny_model(input_ids=extra, pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"])


def test_loaded_processor_and_model_from_init_dir(tiny_model_dir):
    model = KeyeForConditionalGeneration.from_pretrained(str(tiny_model_dir))
    processor = KeyeVLProcessor.from_pretrained(tiny_model_dir)
    batch = processor.process_conversations([conversation({"type": "image", "image": image(56, 56)})])
    assert model(**batch).logits.shape[-1] == len(processor.tokenizer)

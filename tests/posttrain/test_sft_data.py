import torch
from PIL import Image

from posttrain.sft_data import encode_sft_row, sft_batch
from rollout.encoding import PromptEncoder
from rollout.types import GenerationRequest


def test_loss_on_the_assistant_tokens_only(tiny_tokenizer):
    encoder = PromptEncoder(tiny_tokenizer)
    row = {"messages": [{"role": "user", "content": "What is 2 + 3?"},
                        {"role": "assistant", "content": "<think>2+3=5.</think><answer>\\boxed{5}</answer>"}],
           "mode": "think"}
    example = encode_sft_row(row, encoder)
    prompt = encoder.encode(GenerationRequest("x", row["messages"][:1], "think"))
    answer = encoder.text_ids(row["messages"][1]["content"]) + encoder.text_ids("<|im_end|>")
    assert example.prompt.input_ids == prompt.input_ids + answer  # the rollout's tokenisation, then the answer's
    batch = sft_batch([example], encoder.pad_id)
    assert batch.loss_mask[0].tolist() == [0] * len(prompt) + [1] * len(answer)
    batch.validate()


def test_sandbox_output_and_its_image_carry_no_loss(tiny_processor, tiny_tokenizer):
    encoder = PromptEncoder(tiny_processor)
    crop = Image.new("RGB", (56, 56), "green")
    assistant = [{"type": "text", "text": "<think>zoom\\n```python\\nprint(1)\\n```\\n<sandbox_output>1 "},
                 {"type": "image", "image": crop},
                 {"type": "text", "text": "</sandbox_output>\\nok</think><answer>1</answer>"}]
    row = {"messages": [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (56, 56))},
                                                     {"type": "text", "text": "How many?"}]},
                        {"role": "assistant", "content": assistant}], "mode": "agentic"}
    example = encode_sft_row(row, encoder)
    tokens = tiny_tokenizer.convert_ids_to_tokens(example.completion_ids)
    trained = [t for t, m in zip(tokens, example.loss_mask) if m]
    untrained = [t for t, m in zip(tokens, example.loss_mask) if not m]
    assert "<sandbox_output>" in untrained and "</sandbox_output>" in untrained and "<|image_pad|>" in untrained
    assert "<|image_pad|>" not in trained and "</think>" in trained and "<|im_end|>" in trained
    batch = sft_batch([example], encoder.pad_id)
    assert batch.image_grid_thw.tolist() == [[1, 4, 4], [1, 4, 4]]  # the prompt image, then the sandbox image
    assert int(batch.loss_mask.sum()) == sum(example.loss_mask)

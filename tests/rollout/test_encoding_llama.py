"""A tokenizer of another family (Llama 3's chat format) through the prompt encoder and SFT encoding.

Two ways a non-Qwen model went wrong silently before: the mode suffix turned the user content into a list of
items, which Llama's template rendered as its Python repr; and SFT targets ended with Qwen's `<|im_end|>` (as
plain text pieces) instead of the model's own `<|eot_id|>`, so the model would never learn to stop.
"""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from posttrain.sft_data import encode_sft_row
from rollout.encoding import PromptEncoder
from rollout.types import GenerationRequest


@pytest.fixture(scope="module")
def encoder(llama_dir):
    return PromptEncoder.from_model_dir(llama_dir)


def test_the_end_of_turn_is_the_templates_own_token(encoder):
    eot = encoder.tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert encoder.end_of_turn == "<|eot_id|>"
    assert encoder.eos_ids == [eot]


def test_prompt_renders_the_content_as_text_with_the_mode_suffix(encoder):
    prompt = encoder.encode(GenerationRequest("r", [{"role": "user", "content": "What is 2 + 3?"}], "think"))
    expected = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2 + 3? /think<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert encoder.tokenizer.decode(prompt.input_ids) == expected
    assert prompt.input_ids == encoder.tokenizer.encode(expected, add_special_tokens=False)


def test_sft_targets_end_with_eot_id(encoder):
    row = {"messages": [{"role": "user", "content": "What is 2 + 3?"},
                        {"role": "assistant", "content": "\\boxed{5}"}], "mode": "no_think"}
    example = encode_sft_row(row, encoder, "row 1")
    tokenizer = encoder.tokenizer
    assert example.completion_ids == tokenizer.encode("\\boxed{5}<|eot_id|>", add_special_tokens=False)
    assert example.completion_ids[-1] == tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert example.loss_mask == [1] * len(example.completion_ids)
    assert "<|im_end|>" not in tokenizer.decode(example.prompt.input_ids)


def test_a_template_that_closes_turns_with_plain_text_falls_to_the_eos_token(llama_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(str(llama_dir))
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n\n{% endfor %}"
    assert PromptEncoder(tokenizer).end_of_turn == "<|eot_id|>"
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match=r"writes '' after an assistant message.*set `eos_token`"):
        PromptEncoder(tokenizer).end_of_turn


def test_no_template_and_no_im_end_is_refused(llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(str(llama_dir))
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match=r"no chat template and no <\|im_end\|> token"):
        PromptEncoder(tokenizer).eos_ids

from keye_vl.tokenizer import REASONING_TAGS, SPECIAL_TOKENS


def test_special_token_ids_match_the_tiny_preset(tiny_tokenizer, tiny_config):
    ids = tiny_tokenizer.convert_tokens_to_ids
    assert ids("<|image_pad|>") == tiny_config.image_token_id
    assert ids("<|video_pad|>") == tiny_config.video_token_id
    assert ids("<|vision_start|>") == tiny_config.vision_start_token_id
    assert ids("<|vision_end|>") == tiny_config.vision_end_token_id
    assert ids("<|im_end|>") == tiny_config.text_config.eos_token_id == tiny_tokenizer.eos_token_id
    assert ids("<|endoftext|>") == tiny_config.text_config.pad_token_id == tiny_tokenizer.pad_token_id
    assert [ids(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert len(tiny_tokenizer) == tiny_config.text_config.vocab_size


def test_every_keye_token_is_one_token(tiny_tokenizer):
    for token in SPECIAL_TOKENS + REASONING_TAGS:
        assert tiny_tokenizer.tokenize(token) == [token]


def test_reasoning_tags_survive_skip_special_tokens(tiny_tokenizer):
    text = "<think>7 + 5 = 12</think><answer>\\boxed{12}</answer><|im_end|>"
    ids = tiny_tokenizer(text)["input_ids"]
    assert tiny_tokenizer.decode(ids, skip_special_tokens=True) == text.replace("<|im_end|>", "")


def test_digits_are_single_tokens(tiny_tokenizer):
    assert tiny_tokenizer.tokenize("12345") == ["1", "2", "3", "4", "5"]


def test_training_is_deterministic(tiny_tokenizer):
    from keye_vl.tokenizer import build_tiny_tokenizer

    assert build_tiny_tokenizer().get_vocab() == tiny_tokenizer.get_vocab()

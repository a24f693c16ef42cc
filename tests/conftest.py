"""Shared fixtures: the tiny model, tokenizer and processor are built once per session (offline)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from keye_vl.tokenizer import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_processor(tiny_tokenizer):
    from keye_vl.presets import preset_processing
    from keye_vl.processing import KeyeVLProcessor

    return KeyeVLProcessor.build(tiny_tokenizer, preset_processing("keye-tiny"))


@pytest.fixture(scope="session")
def tiny_config():
    from keye_vl.configuration import KeyeVLConfig

    return KeyeVLConfig.from_preset("keye-tiny")


@pytest.fixture()
def tiny_model(tiny_config):
    from keye_vl.modeling import KeyeForConditionalGeneration

    torch.manual_seed(0)
    return KeyeForConditionalGeneration(tiny_config).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from keye_vl.weights import init_model_dir

    out = tmp_path_factory.mktemp("keye-tiny")
    init_model_dir(out, "keye-tiny")
    return out


# A second architecture family: Llama 3's chat format (its own special tokens, <|eot_id|> ending a turn, no
# Keye tokens, no reasoning tags as tokens), with a byte-level BPE trained offline like the tiny tokenizer.
LLAMA_SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                        "<|eot_id|>"]
LLAMA_CHAT_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")


def build_llama_dir(out, vocab_size: int = 600, seed: int = 0, tied: bool = True, spare_rows: int = 0):
    """A ~0.1M-parameter `LlamaForCausalLM` and its Llama-3-style tokenizer, saved as a Hugging Face directory;
    `spare_rows`: embedding rows past the tokenizer's last id, as padded checkpoints have."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from keye_vl.tokenizer import tiny_corpus

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  special_tokens=[AddedToken(t, special=True, normalized=False)
                                                  for t in LLAMA_SPECIAL_TOKENS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(tiny_corpus(2000, seed), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                        clean_up_tokenization_spaces=False)
    tokenizer.chat_template = LLAMA_CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer) + spare_rows, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=tied)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory):
    return build_llama_dir(tmp_path_factory.mktemp("llama-tiny"))


@pytest.fixture(scope="session")
def make_llama_dir():
    """`build_llama_dir` itself, for tests that need variants (untied, spare rows)."""
    return build_llama_dir


@pytest.fixture(scope="module")
def cluster_gpus():
    """Logical GPUs of the `cluster` fixture's Ray (its bookkeeping only: torch here has no CUDA); a module that
    checks GPU placement overrides this fixture."""
    return 0


@pytest.fixture(scope="module")
def cluster(cluster_gpus):
    """A two-CPU Ray cluster on loopback for one test module's actors."""
    from runtime.local_ray import local_ray

    with local_ray(num_cpus=2, num_gpus=cluster_gpus, log_to_driver=False):
        yield

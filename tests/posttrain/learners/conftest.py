"""Fixtures for learner tests: a tiny text-only Qwen3 directory, token batches, and a fresh Learner factory.

Learners in this process share one torch.distributed group of one (gloo), created by the first Learner.
"""

from __future__ import annotations

import pytest
import torch

from posttrain.learners.batch import TrainBatch

VOCAB = 64


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory):
    """A ~20k-parameter Qwen3ForCausalLM saved in HF format: a plain HF causal LM, not Keye."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, pad_token_id=0)
    out = tmp_path_factory.mktemp("qwen-tiny")
    Qwen3ForCausalLM(config).save_pretrained(out)
    return str(out)


def token_batch(rows: int, length: int, seed: int = 0, vocab: int = VOCAB, prompt: int = 3,
                ragged: bool = True) -> TrainBatch:
    """Random tokens; ragged lengths (right padding), loss on everything after a `prompt`-token prefix."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (rows, length), generator=g)
    attn = torch.ones(rows, length, dtype=torch.long)
    if ragged:
        lengths = torch.randint(length // 2, length + 1, (rows,), generator=g)
        attn = (torch.arange(length) < lengths.unsqueeze(1)).long()
    ids = ids * attn
    loss_mask = attn.clone()
    loss_mask[:, :prompt] = 0
    return TrainBatch(input_ids=ids, attention_mask=attn, loss_mask=loss_mask)


@pytest.fixture()
def make_batch():
    return token_batch

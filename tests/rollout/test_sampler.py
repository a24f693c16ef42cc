"""The compact engine's sampler against transformers' own logits warpers and against the distribution itself."""

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from rollout.sampler import invert_cdf, sample_tokens, truncate
from rollout.types import SamplingParams


@pytest.mark.parametrize("top_k,top_p", [(0, 0.9), (20, 1.0), (20, 0.95), (5, 0.5), (0, 0.01)])
def test_truncation_keeps_what_transformers_keeps(top_k, top_p):
    logits = torch.randn(16, 300, generator=torch.Generator().manual_seed(top_k))
    scaled = TemperatureLogitsWarper(0.7)(None, logits.clone())
    expected = scaled
    if top_k:
        expected = TopKLogitsWarper(top_k)(None, expected)
    if top_p < 1.0:
        expected = TopPLogitsWarper(top_p)(None, expected)
    kept = torch.isfinite(truncate(logits / 0.7, top_k, top_p))
    assert torch.equal(kept, torch.isfinite(expected))


def test_inverting_the_cdf_draws_from_the_distribution_and_never_a_zero_token():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0]])
    uniform = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    tokens = invert_cdf(probs.expand(len(uniform), -1), uniform)
    frequencies = torch.bincount(tokens, minlength=6) / len(uniform)
    torch.testing.assert_close(frequencies, probs[0], atol=0.01, rtol=0)
    edges = invert_cdf(probs.expand(3, -1), torch.tensor([0.0, 1 - 2 ** -24, 0.5]))
    assert edges.tolist() == [1, 4, 3]


def test_logprobs_are_of_the_scaled_distribution_before_truncation_and_suppression():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    suppress = torch.tensor([0, 1, 2])
    sampling = SamplingParams(temperature=0.5, top_k=3, top_p=0.9)
    tokens, logprobs = sample_tokens(logits, sampling, torch.rand(4), suppress)
    assert not set(tokens.tolist()) & {0, 1, 2}
    expected = torch.log_softmax(logits / 0.5, -1).gather(1, tokens[:, None])[:, 0]
    torch.testing.assert_close(logprobs, expected)
    greedy, greedy_logprobs = sample_tokens(logits, SamplingParams(temperature=0), torch.rand(4), suppress)
    masked = logits.clone()
    masked[:, :3] = float("-inf")
    assert torch.equal(greedy, masked.argmax(-1))
    torch.testing.assert_close(greedy_logprobs, torch.log_softmax(logits, -1).gather(1, greedy[:, None])[:, 0])

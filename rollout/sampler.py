"""One decode step's token choice and its logprob, from the step's logits alone.

The logprob is that of the temperature-scaled distribution over the whole vocabulary, before top-k/top-p
truncation and before suppressed tokens are removed: the quantity the learner recomputes from its own logits
(it divides them by the same temperature), so gathering it here costs one log-softmax per step instead of
keeping every step's logits. Truncation follows transformers' order (temperature, then top-k, then top-p).

A sampled token is drawn by inverting the cumulative distribution at one uniform number per row, which the
caller draws for every completion each step: a row's tokens then depend on its seed and its own logits only, not
on which other rows share its batch, so dropping finished rows or sharing a prefill never changes a sample.
"""

from __future__ import annotations

import torch

from rollout.types import SamplingParams


def sample_tokens(logits: torch.Tensor, sampling: SamplingParams, uniform: torch.Tensor,
                  suppress: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [rows, vocab], uniform [rows] in [0, 1) -> (tokens [rows], logprobs [rows]); `suppress` ids are
    never chosen."""
    scaled = logits.float() / sampling.logprob_temperature
    logprobs = torch.log_softmax(scaled, dim=-1)
    candidates = scaled.clone() if suppress is not None else scaled
    if suppress is not None:
        candidates[:, suppress] = float("-inf")
    if sampling.greedy:
        tokens = candidates.argmax(dim=-1)
    else:
        candidates = truncate(candidates, sampling.top_k, sampling.top_p)
        tokens = invert_cdf(torch.softmax(candidates, dim=-1), uniform)
    return tokens, logprobs.gather(1, tokens[:, None])[:, 0]


def truncate(scaled: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Scaled logits with everything outside the top-k and then outside the top-p mass set to -inf."""
    if top_k and top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = torch.sort(scaled, dim=-1, descending=True)
        probs = torch.softmax(ordered, dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        drop = mass_before >= top_p  # keeps the smallest prefix whose mass reaches top_p (at least one token)
        scaled = scaled.masked_fill(torch.zeros_like(drop).scatter(1, order, drop), float("-inf"))
    return scaled


def invert_cdf(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """The first token whose cumulative probability exceeds uniform x total: never one of probability zero."""
    cdf = probs.cumsum(dim=-1)
    total = cdf[:, -1:]
    target = torch.minimum(uniform[:, None].to(cdf.dtype) * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, target, right=True)[:, 0]

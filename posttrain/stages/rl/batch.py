"""Scored rollouts to a `TrainBatch`: prompt ids + completion ids per row, loss on the model's own tokens.

The completion's loss mask (0 on inserted sandbox tokens) and the sampler's logprobs are placed at the
completion's positions (`old_logprobs[b, t]` scores `input_ids[b, t]`, the learner's convention). Vision inputs
are re-encoded here from the prompt rows (and the sandbox images of agentic samples), in row order; the prompt
ids the encoder produces must equal the ones the rollout used, which is checked. With `group_size` the rows
carry `group_ids` (G consecutive rows per prompt), which the learner's shared-prefix layout and the rank
balancer keep together.
"""

from __future__ import annotations

import torch

from posttrain.learners.batch import TrainBatch
from posttrain.prompts import request_of
from rollout.encoding import VISION_KEYS, PromptEncoder
from rollout.types import Completion


def rl_batch(rows: list[dict], completions: list[Completion], advantages: torch.Tensor,
             encoder: PromptEncoder, group_size: int | None = None) -> TrainBatch:
    """rows[i] is the prompt row of completions[i]; advantages [B]."""
    sequences = [c.prompt_ids + c.token_ids for c in completions]
    longest = max(len(s) for s in sequences)
    shape = (len(sequences), longest)
    ids = torch.full(shape, encoder.pad_id, dtype=torch.long)
    attention, loss_mask = torch.zeros(shape, dtype=torch.long), torch.zeros(shape, dtype=torch.long)
    old = torch.zeros(shape, dtype=torch.float32)
    for b, (c, sequence) in enumerate(zip(completions, sequences)):
        start, end = len(c.prompt_ids), len(sequence)
        ids[b, :end] = torch.tensor(sequence)
        attention[b, :end] = 1
        loss_mask[b, start:end] = torch.tensor(c.loss_mask, dtype=torch.long)
        old[b, start:end] = torch.tensor(c.logprobs, dtype=torch.float32)
    vision = _vision(rows, completions, encoder)
    groups = torch.arange(len(sequences)) // group_size if group_size else None
    return TrainBatch(input_ids=ids, attention_mask=attention, loss_mask=loss_mask, old_logprobs=old,
                      advantages=advantages.float(), group_ids=groups, **vision)


def _vision(rows: list[dict], completions: list[Completion], encoder: PromptEncoder) -> dict:
    if encoder.processor is None:
        return {}
    parts: dict[str, list] = {k: [] for k in VISION_KEYS}
    cache: dict[str, object] = {}
    for row, c in zip(rows, completions):
        key = str(row["id"])
        if key not in cache:
            cache[key] = encoder.encode(request_of(row))
        prompt = cache[key]
        if prompt.input_ids != c.prompt_ids:
            raise ValueError(f"prompt {key}: the learner's encoding differs from the rollout's; both sides must "
                             f"load the same processor (model directory)")
        if c.images:
            prompt, _ = encoder.append(prompt, [], c.images)
        for k in VISION_KEYS:
            if k in prompt.vision:
                parts[k].append(prompt.vision[k])
    return {k: torch.cat(v) for k, v in parts.items() if v}

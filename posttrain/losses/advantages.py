"""Group-normalised advantages (GRPO, Shao et al. 2024, eq. 3 / sec. 4.1.2 "outcome supervision").

A_i = (r_i - mean(r_group)) / std(r_group), every token of sample i gets A_i. Conventions (DESIGN.md): the std is
the unbiased (n - 1) one, and a group whose rewards are all equal (or a group of one) gets advantage exactly 0,
never 0/0. `scale_std=False` drops the division (Dr.GRPO, Liu et al. 2025, which removes the std term's
difficulty bias). Departure: a sample whose reward failed and was skipped (`scored` False) is no sibling: the
mean and std are over the group's scored samples only (a skipped sample must not pull the baseline towards 0),
and it gets advantage 0. The driver calls this (step 4 of the RL step); the learner only consumes the result.
"""

from __future__ import annotations

import torch
from torch import Tensor


def group_advantages(rewards: Tensor, group_size: int, scale_std: bool = True, eps: float = 1e-6,
                     scored: Tensor | None = None) -> Tensor:
    """rewards: [num_groups * group_size], grouped contiguously -> advantages of the same shape.
    scored: [num_groups * group_size] bool, the samples whose reward counts (None: all); the others' rewards are
    ignored (any placeholder) and their advantage is 0, as is every advantage of a group with fewer than two.

    >>> group_advantages(torch.tensor([1.0, 0.0, 0.0, 2.0, 2.0, 2.0]), group_size=3).round(decimals=3)
    tensor([ 1.1550, -0.5770, -0.5770,  0.0000,  0.0000,  0.0000])
    >>> group_advantages(torch.tensor([1.0, 0.0, 0.0]), 3, scored=torch.tensor([True, True, False])).round(decimals=3)
    tensor([ 0.7070, -0.7070,  0.0000])
    """
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a length divisible by group_size={group_size}; got shape "
                         f"{tuple(rewards.shape)} (pass all G samples of every prompt, contiguously)")
    scored = torch.ones_like(rewards, dtype=torch.bool) if scored is None else scored.bool()
    if scored.shape != rewards.shape:
        raise ValueError(f"scored must have the rewards' shape {tuple(rewards.shape)}, got {tuple(scored.shape)}")
    if not torch.isfinite(rewards[scored]).all():
        bad = torch.nonzero(scored & ~torch.isfinite(rewards)).flatten().tolist()
        raise ValueError(f"non-finite rewards at samples {bad[:10]}; record reward failures and drop or re-score "
                         f"those samples before computing advantages")
    mask = scored.view(-1, group_size)  # [groups, G]
    grouped = torch.where(mask, rewards.double().view(-1, group_size), 0.0)  # [groups, G]
    n = mask.sum(-1, keepdim=True)  # [groups, 1]
    centred = torch.where(mask, grouped - grouped.sum(-1, keepdim=True) / n.clamp(min=1), 0.0)
    highest = torch.where(mask, grouped, -torch.inf).max(-1, keepdim=True).values
    lowest = torch.where(mask, grouped, torch.inf).min(-1, keepdim=True).values
    constant = (highest == lowest) | (n < 2)  # [groups, 1]: all equal, or no baseline to compare with
    if scale_std:
        std = ((centred ** 2).sum(-1, keepdim=True) / (n - 1).clamp(min=1)).sqrt()  # unbiased, over the scored
        centred = centred / (std + eps)
    return torch.where(constant, torch.zeros_like(centred), centred).view(-1).to(rewards.dtype)

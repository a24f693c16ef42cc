"""Group-normalised advantages (GRPO, Shao et al. 2024, eq. 3 / sec. 4.1.2 "outcome supervision").

A_i = (r_i - mean(r_group)) / std(r_group), every token of sample i gets A_i. Conventions (DESIGN.md): the std is
the unbiased (n - 1) one, and a group whose rewards are all equal (or a group of one) gets advantage exactly 0,
never 0/0. `scale_std=False` drops the division (Dr.GRPO, Liu et al. 2025, which removes the std term's
difficulty bias). The driver calls this (step 4 of the RL step); the learner only consumes the result.
"""

from __future__ import annotations

import torch
from torch import Tensor


def group_advantages(rewards: Tensor, group_size: int, scale_std: bool = True, eps: float = 1e-6) -> Tensor:
    """rewards: [num_groups * group_size], grouped contiguously -> advantages of the same shape.

    >>> group_advantages(torch.tensor([1.0, 0.0, 0.0, 2.0, 2.0, 2.0]), group_size=3).round(decimals=3)
    tensor([ 1.1550, -0.5770, -0.5770,  0.0000,  0.0000,  0.0000])
    """
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a length divisible by group_size={group_size}; got shape "
                         f"{tuple(rewards.shape)} (pass all G samples of every prompt, contiguously)")
    if not torch.isfinite(rewards).all():
        bad = torch.nonzero(~torch.isfinite(rewards)).flatten().tolist()
        raise ValueError(f"non-finite rewards at samples {bad[:10]}; record reward failures and drop or re-score "
                         f"those samples before computing advantages")
    grouped = rewards.double().view(-1, group_size)  # [groups, G]
    centred = grouped - grouped.mean(-1, keepdim=True)
    constant = (grouped.max(-1).values == grouped.min(-1).values).unsqueeze(-1)  # [groups, 1]
    if scale_std and group_size > 1:
        centred = centred / (grouped.std(-1, unbiased=True, keepdim=True) + eps)
    return torch.where(constant, torch.zeros_like(centred), centred).view(-1).to(rewards.dtype)

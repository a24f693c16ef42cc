"""Preference pairs inside a tensor batch: which rows are chosen/rejected partners, and their log-ratios.

Rows of a preference batch are pairs sharing a `group_id`, one chosen and one rejected, in any order; the
micro-batcher keeps a pair together. Sequence log-probs are sums over loss tokens (Rafailov et al. 2023).
"""

from __future__ import annotations

import torch
from torch import Tensor

from posttrain.losses.base import LossInputs, LossOutput


def pair_rows(chosen: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor]:
    """chosen: [N] bool, group_ids: [N] -> (chosen row indices [P], their rejected partners [P])."""
    order = torch.argsort(group_ids * 2 + (~chosen).long(), stable=True)  # per group: chosen, then rejected
    g, c = group_ids[order], chosen[order]
    if order.numel() % 2 or not (c[0::2].all() and (~c[1::2]).all() and (g[0::2] == g[1::2]).all()):
        raise ValueError("preference rows must come in pairs: each group_id exactly one chosen and one rejected "
                         f"row (group_ids {group_ids.tolist()[:16]}, chosen {chosen.tolist()[:16]})")
    return order[0::2], order[1::2]


def sequence_logratios(inputs: LossInputs) -> tuple[Tensor, Tensor]:
    """(chosen, rejected) log pi/pi_ref of whole sequences, each [P]."""
    seq = ((inputs.logprobs - inputs.ref_logprobs) * inputs.mask).sum(-1)  # [N]
    chosen_idx, rejected_idx = pair_rows(inputs.chosen, inputs.group_ids)
    return seq[chosen_idx], seq[rejected_idx]


def chosen_nll(inputs: LossInputs) -> LossOutput:
    """Negative log-likelihood of the chosen rows' loss tokens, averaged over all chosen tokens of the batch (the
    SFT term of MPO and of a regularised reward model)."""
    chosen_mask = inputs.mask * inputs.chosen.unsqueeze(-1).to(inputs.mask.dtype)  # [N, T]
    loss = -(inputs.logprobs * chosen_mask).sum() / max(inputs.resolved_totals().chosen_tokens, 1.0)
    return LossOutput(loss, {"sft": loss.detach()})

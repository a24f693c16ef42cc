"""Loss aggregation modes: how per-token losses `[N, T]` become one scalar.

Names and conventions are verl's (`loss_agg_mode`), so results compare:
- `token-mean`: every loss token of the batch weighs the same (DAPO, Yu et al. 2025, eq. 12).
- `seq-mean-token-mean`: mean over tokens within a sequence, then over sequences (GRPO, Shao et al. 2024, eq. 3).
- `seq-mean-token-sum-norm`: token sums divided by a constant length, then mean over sequences (Dr.GRPO,
  Liu et al. 2025, sec. 3.2: no 1/|o_i| length bias). The constant is the maximum completion length: the
  configured generation budget when the loss is given one, else the longest completion of the batch.
Each returns a contribution: numerator over this micro-batch, denominators from whole-batch `BatchTotals`.
Sequences without loss tokens count in no denominator.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from posttrain.losses.base import BatchTotals

Aggregation = Callable[[Tensor, Tensor, BatchTotals], Tensor]
AGGREGATIONS: dict[str, Aggregation] = {}


def register_aggregation(name: str):
    def add(fn: Aggregation) -> Aggregation:
        AGGREGATIONS[name] = fn
        return fn

    return add


def get_aggregation(name: str) -> Aggregation:
    if name not in AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {name!r}; choose one of {sorted(AGGREGATIONS)}")
    return AGGREGATIONS[name]


@register_aggregation("token-mean")
def token_mean(values: Tensor, mask: Tensor, totals: BatchTotals) -> Tensor:
    # values, mask: [N, T]
    return (values * mask).sum() / max(totals.tokens, 1.0)


@register_aggregation("seq-mean-token-mean")
def seq_mean_token_mean(values: Tensor, mask: Tensor, totals: BatchTotals) -> Tensor:
    per_seq = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # [N]
    return per_seq.sum() / max(totals.sequences, 1.0)


@register_aggregation("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(values: Tensor, mask: Tensor, totals: BatchTotals) -> Tensor:
    per_seq = (values * mask).sum(-1) / max(totals.max_tokens, 1.0)  # [N]
    return per_seq.sum() / max(totals.sequences, 1.0)

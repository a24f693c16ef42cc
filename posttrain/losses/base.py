"""What every loss receives and returns, and the registry that variants add themselves to.

Boundary: losses see per-sample tensors in a compact layout (`[N, T]`, one row per sequence, position t scoring
token t given tokens < t) and whole-batch counts; they know nothing of models, packing, DeepSpeed or ranks.
A loss returns its *contribution* to the batch loss: numerators are summed over this micro-batch, denominators
come from `BatchTotals`, which the learner sums over every micro-batch and rank. So gradient accumulation and
data parallelism give exactly the gradient of one big batch (no "mean of micro-batch means" bias).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import Tensor


@dataclass(frozen=True)
class BatchTotals:
    """Counts over the whole batch (all micro-batches, all ranks) that losses divide by."""

    tokens: float  # loss tokens
    sequences: float  # sequences with at least one loss token
    max_tokens: float  # loss tokens of the longest sequence
    pairs: float = 0.0  # preference pairs (chosen rows)
    chosen_tokens: float = 0.0  # loss tokens of chosen rows

    @classmethod
    def of(cls, mask: Tensor, chosen: Tensor | None = None) -> BatchTotals:
        """Totals of one tensor batch; `mask` [N, T], `chosen` [N] bool."""
        per_seq = mask.sum(-1)
        chosen_tokens = float(per_seq[chosen].sum()) if chosen is not None else 0.0
        return cls(tokens=float(per_seq.sum()), sequences=float((per_seq > 0).sum()),
                   max_tokens=float(per_seq.max()) if per_seq.numel() else 0.0,
                   pairs=float(chosen.sum()) if chosen is not None else 0.0, chosen_tokens=chosen_tokens)

    def as_tensor(self) -> Tensor:
        return torch.tensor([getattr(self, f.name) for f in fields(self)], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, values: Tensor) -> BatchTotals:
        return cls(*(float(v) for v in values))


@dataclass
class LossInputs:
    logprobs: Tensor  # [N, T] log p(token_t | tokens_<t) under the trained model, with grad
    mask: Tensor  # [N, T] float, 1 on tokens that carry loss
    old_logprobs: Tensor | None = None  # [N, T] behaviour policy (sampler or pre-update learner)
    ref_logprobs: Tensor | None = None  # [N, T] frozen reference model
    advantages: Tensor | None = None  # [N]
    entropy: Tensor | None = None  # [N, T] entropy of the next-token distribution at t-1
    scores: Tensor | None = None  # [N] scalar sequence scores (reward-model head)
    chosen: Tensor | None = None  # [N] bool, preference rows: chosen (True) or rejected (False)
    group_ids: Tensor | None = None  # [N] long, a preference pair shares its group id
    totals: BatchTotals | None = None  # None: this tensor batch is the whole batch

    def resolved_totals(self) -> BatchTotals:
        return self.totals if self.totals is not None else BatchTotals.of(self.mask, self.chosen)


@dataclass
class LossOutput:
    loss: Tensor  # scalar, this micro-batch's contribution to the batch loss
    stats: dict[str, Tensor] = field(default_factory=dict)  # detached scalars, contributions that add up likewise


class Loss:
    """Base of registered losses: hyperparameters in `__init__`, tensors in `__call__`."""

    name: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()  # LossInputs fields that must not be None
    model_output: ClassVar[str] = "logprobs"  # what the learner computes: "logprobs" or "scores"
    mask_source: ClassVar[str] = "loss_mask"  # "loss_mask", or "tokens" (every predicted token, pre-training)
    logs_entropy: ClassVar[bool] = False  # ask the learner for the per-token entropy (costs a softmax)

    @property
    def needs_reference(self) -> bool:
        """True when the learner must provide `ref_logprobs` (from the batch or a frozen reference model)."""
        return "ref_logprobs" in self.needs

    @property
    def scores_with_logprobs(self) -> bool:
        """True when a "scores" loss also trains on token log-probs (a reward model's SFT regulariser)."""
        return False

    @property
    def entropy_grad(self) -> bool:
        """True when entropy enters the loss (then it must keep its graph); otherwise it is only logged."""
        return False

    def __call__(self, inputs: LossInputs) -> LossOutput:
        missing = [name for name in self.needs if getattr(inputs, name) is None]
        if missing:
            raise ValueError(f"loss {self.name!r} needs {missing} in the batch; the rollout/data stage must fill "
                             f"them (TrainBatch fields of the same names)")
        return self.forward(inputs)

    def forward(self, inputs: LossInputs) -> LossOutput:
        raise NotImplementedError


LOSSES: dict[str, type[Loss]] = {}


def register_loss(name: str):
    """Class decorator: `@register_loss("grpo")` makes the loss buildable by name from a recipe."""

    def add(cls: type[Loss]) -> type[Loss]:
        if name in LOSSES and LOSSES[name] is not cls:
            raise ValueError(f"loss {name!r} is registered twice ({LOSSES[name].__module__}, {cls.__module__})")
        cls.name = name
        LOSSES[name] = cls
        return cls

    return add


def check_loss_args(name: str, args: dict[str, Any]) -> type[Loss]:
    """The registered class for `name`, after checking that `args` fit its constructor (raises ValueError)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; registered losses: {sorted(LOSSES)} (register new ones with "
                         f"@register_loss in posttrain/losses/)")
    cls = LOSSES[name]
    try:
        inspect.signature(cls).bind(**args)
    except TypeError as error:
        raise ValueError(f"loss {name!r}: bad arguments {sorted(args)}: {error}; accepted: "
                         f"{list(inspect.signature(cls).parameters)}") from None
    return cls


def build_loss(name: str, **args: Any) -> Loss:
    return check_loss_args(name, args)(**args)


def token_mean(values: Tensor, mask: Tensor, totals: BatchTotals) -> Tensor:
    """Σ mask*values / batch tokens: a logging statistic's contribution to the batch token mean."""
    return ((values * mask).sum() / max(totals.tokens, 1.0)).detach()

"""Supervised fine-tuning: negative log-likelihood of the target tokens (maximum likelihood; the SFT stage of
InstructGPT, Ouyang et al. 2022, sec. 3.5). `sft` honours the loss mask (assistant tokens only; sandbox outputs
and prompts excluded by the data stage); `next_token` is the pre-training form, every predicted token counts.

L = -Σ_{i,t} m_it log p(y_it | y_i,<t) / Σ m  (token-mean; other aggregation modes on request).
"""

from __future__ import annotations

from posttrain.losses.aggregation import get_aggregation
from posttrain.losses.base import Loss, LossInputs, LossOutput, register_loss


@register_loss("sft")
class SFTLoss(Loss):
    def __init__(self, aggregation: str = "token-mean"):
        self.aggregation = aggregation
        self._aggregate = get_aggregation(aggregation)

    def forward(self, inputs: LossInputs) -> LossOutput:
        # logprobs, mask: [N, T]
        totals = inputs.resolved_totals()
        loss = self._aggregate(-inputs.logprobs, inputs.mask, totals)
        return LossOutput(loss, {"nll": loss.detach()})


@register_loss("next_token")
class NextTokenLoss(SFTLoss):
    """Pre-training next-token loss: the learner builds the mask from every token that has a predecessor."""

    mask_source = "tokens"

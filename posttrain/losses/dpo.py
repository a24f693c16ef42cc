"""DPO with the sigmoid (Bradley-Terry) loss (Rafailov et al. 2023, "Direct Preference Optimization", eq. 7).

L = -log σ( β [ (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l)) ] ), mean over pairs;
sequence log-probs are sums over the loss tokens.
"""

from __future__ import annotations

import torch.nn.functional as F

from posttrain.losses.base import Loss, LossInputs, LossOutput, register_loss
from posttrain.losses.pairs import sequence_logratios


@register_loss("dpo")
class DPOLoss(Loss):
    needs = ("ref_logprobs", "chosen", "group_ids")

    def __init__(self, beta: float = 0.1):
        self.beta = beta

    def forward(self, inputs: LossInputs) -> LossOutput:
        pairs = max(inputs.resolved_totals().pairs, 1.0)
        chosen, rejected = sequence_logratios(inputs)  # [P], [P]
        margin = self.beta * (chosen - rejected)
        loss = -F.logsigmoid(margin).sum() / pairs
        stats = {"dpo": loss.detach(), "reward_margin": margin.detach().sum() / pairs,
                 "reward_accuracy": (margin > 0).float().sum().detach() / pairs}
        return LossOutput(loss, stats)

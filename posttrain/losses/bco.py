"""BCO, pair form (Jung et al. 2024, "Binary Classifier Optimization", eq. 6; the quality loss of MPO,
Wang et al. 2024, eq. 3): each response is classified on its own, chosen as good and rejected as bad:

L = -log σ(β * chosen_logratio) - log σ(-β * rejected_logratio), mean over pairs.

Departure: BCO shifts the implicit rewards by δ, a running mean of them (TRL keeps one); the pair form here, as
DESIGN.md fixes it, has no δ, so it is a stateless function of the batch and resumes exactly.
"""

from __future__ import annotations

import torch.nn.functional as F

from posttrain.losses.base import Loss, LossInputs, LossOutput, register_loss
from posttrain.losses.pairs import sequence_logratios


@register_loss("bco_pair")
class BCOPairLoss(Loss):
    needs = ("ref_logprobs", "chosen", "group_ids")

    def __init__(self, beta: float = 0.1):
        self.beta = beta

    def forward(self, inputs: LossInputs) -> LossOutput:
        pairs = max(inputs.resolved_totals().pairs, 1.0)
        chosen, rejected = sequence_logratios(inputs)  # [P], [P]
        per_pair = -F.logsigmoid(self.beta * chosen) - F.logsigmoid(-self.beta * rejected)
        loss = per_pair.sum() / pairs
        return LossOutput(loss, {"bco": loss.detach()})

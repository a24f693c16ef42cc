"""Reward-model training: Bradley-Terry pairwise loss on scalar scores of a sequence-classification head
(Bradley & Terry 1952; InstructGPT, Ouyang et al. 2022, eq. 1):

L = -log σ(r(x, y_w) - r(x, y_l)), mean over pairs. The learner runs the model's classification head (the score
of the last non-pad token, as transformers' *ForSequenceClassification computes it) instead of log-probs.
"""

from __future__ import annotations

import torch.nn.functional as F

from posttrain.losses.base import Loss, LossInputs, LossOutput, register_loss
from posttrain.losses.pairs import pair_rows


@register_loss("bradley_terry")
class BradleyTerryLoss(Loss):
    needs = ("scores", "chosen", "group_ids")
    model_output = "scores"

    def __init__(self, margin: float = 0.0):
        self.margin = margin  # optional fixed margin (Llama 2, Touvron et al. 2023, eq. 2); 0 = plain BT

    def forward(self, inputs: LossInputs) -> LossOutput:
        pairs = max(inputs.resolved_totals().pairs, 1.0)
        chosen_idx, rejected_idx = pair_rows(inputs.chosen, inputs.group_ids)
        diff = inputs.scores[chosen_idx] - inputs.scores[rejected_idx]  # [P]
        loss = -F.logsigmoid(diff - self.margin).sum() / pairs
        return LossOutput(loss, {"rm_accuracy": (diff > 0).float().sum().detach() / pairs,
                                 "rm_margin": diff.detach().sum() / pairs})

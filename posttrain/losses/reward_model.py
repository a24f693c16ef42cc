"""Reward-model training: Bradley-Terry pairwise loss on scalar scores of a sequence-classification head
(Bradley & Terry 1952; InstructGPT, Ouyang et al. 2022, eq. 1), optionally regularised by the language-modelling
loss on the chosen answers (Yang et al. 2024, "Regularizing Hidden States Enables Learning Generalizable Reward
Model for LLMs", the SFT regulariser):

L = -log σ(r(x, y_w) - r(x, y_l) - margin) + sft_weight * NLL(y_w | x), each a mean over the batch (pairs; chosen
tokens). The learner runs the model's classification head (the score of the last non-pad token, as transformers'
*ForSequenceClassification computes it); with `sft_weight` it also reads the next-token log-probs of the same
hidden states through the starting policy's output embedding, frozen, so the decoder keeps predicting the answers
it is asked to score. On the tiny addition task that term is what lifts held-out accuracy past 80% (README).
"""

from __future__ import annotations

import torch.nn.functional as F

from posttrain.losses.base import Loss, LossInputs, LossOutput, register_loss
from posttrain.losses.pairs import chosen_nll, pair_rows


@register_loss("bradley_terry")
class BradleyTerryLoss(Loss):
    needs = ("scores", "chosen", "group_ids")
    model_output = "scores"

    def __init__(self, margin: float = 0.0, sft_weight: float = 0.0):
        if sft_weight < 0:
            raise ValueError(f"bradley_terry: sft_weight must be >= 0, got {sft_weight}")
        self.margin = margin  # optional fixed margin (Llama 2, Touvron et al. 2023, eq. 2); 0 = plain BT
        self.sft_weight = sft_weight

    @property
    def scores_with_logprobs(self) -> bool:
        return self.sft_weight > 0

    def forward(self, inputs: LossInputs) -> LossOutput:
        pairs = max(inputs.resolved_totals().pairs, 1.0)
        chosen_idx, rejected_idx = pair_rows(inputs.chosen, inputs.group_ids)
        diff = inputs.scores[chosen_idx] - inputs.scores[rejected_idx]  # [P]
        loss = -F.logsigmoid(diff - self.margin).sum() / pairs
        stats = {"rm_accuracy": (diff > 0).float().sum().detach() / pairs, "rm_margin": diff.detach().sum() / pairs}
        if self.sft_weight:
            sft = chosen_nll(inputs)
            loss = loss + self.sft_weight * sft.loss
            stats.update(sft.stats)
        return LossOutput(loss, stats)

"""MPO: Mixed Preference Optimization (Wang et al. 2024, "Enhancing the Reasoning Ability of Multimodal LLMs via
Mixed Preference Optimization", eq. 1; Keye-VL's no-reasoning alignment and iterative alignment):

L = w_p * DPO(sigmoid) + w_q * BCO(pair) + w_g * SFT(NLL on the chosen responses).

The SFT term averages over all chosen loss tokens of the batch (DESIGN.md), not per sequence.
The parts are the registered `dpo`, `bco_pair` and `sft` losses, so MPO is exactly their weighted sum.
"""

from __future__ import annotations

from posttrain.losses.base import Loss, LossInputs, LossOutput, register_loss
from posttrain.losses.bco import BCOPairLoss
from posttrain.losses.dpo import DPOLoss
from posttrain.losses.pairs import chosen_nll


@register_loss("mpo")
class MPOLoss(Loss):
    needs = ("ref_logprobs", "chosen", "group_ids")

    def __init__(self, beta: float = 0.1, w_preference: float = 0.8, w_quality: float = 0.2,
                 w_generation: float = 1.0):
        self.weights = {"dpo": w_preference, "bco": w_quality, "sft": w_generation}
        self.dpo, self.bco = DPOLoss(beta), BCOPairLoss(beta)

    def forward(self, inputs: LossInputs) -> LossOutput:
        parts = {"dpo": self.dpo(inputs), "bco": self.bco(inputs), "sft": chosen_nll(inputs)}
        loss = sum(self.weights[name] * part.loss for name, part in parts.items())
        stats = {key: value for part in parts.values() for key, value in part.stats.items()}
        return LossOutput(loss, stats)



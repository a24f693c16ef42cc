"""GSPO: the clipped objective of GRPO with a sequence-level importance ratio (Zheng et al. 2025, "Group
Sequence Policy Optimization", eq. 5-7; Keye-VL-1.5's RL algorithm).

s_i = exp( (1/|y_i|) Σ_t log(pi(y_it) / pi_old(y_it)) ), clipped as a whole. Implemented in the token form of
the paper (GSPO-token, eq. 13): log s_it = sg[log s_i] + log pi(y_it) - sg[log pi(y_it)], whose value is s_i
for every token and whose gradient is s_i ∇log pi(y_it). With the default `seq-mean-token-mean` aggregation this
is exactly the sequence-level loss and gradient of eq. 5 and 10; other aggregation modes are allowed.
Defaults clip at 3e-4 / 4e-4 as in the paper: sequence ratios stay much closer to 1 than token ratios.
"""

from __future__ import annotations

from torch import Tensor

from posttrain.losses.base import register_loss
from posttrain.losses.grpo import GRPOLoss


@register_loss("gspo")
class GSPOLoss(GRPOLoss):
    def __init__(self, clip_low: float = 3e-4, clip_high: float = 4e-4, aggregation: str = "seq-mean-token-mean",
                 kl_coef: float = 0.0, kl_estimator: str = "k3", entropy_coef: float = 0.0,
                 max_completion_length: int | None = None):
        super().__init__(clip_low, clip_high, aggregation, kl_coef, kl_estimator, entropy_coef,
                         max_completion_length)

    def log_ratio(self, logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> Tensor:
        # logprobs, old_logprobs, mask: [N, T] -> [N, T], each row constant-valued at log s_i
        seq = ((logprobs - old_logprobs) * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)
        return seq.detach() + logprobs - logprobs.detach()

"""On-policy distillation (OPD): the student's own samples, scored token by token by a teacher; reverse KL.

Estimator (the per-token advantage form of NeMo-RL's `adv_estimator: opd` and TRL's on-policy distillation, after
Agarwal et al. 2024 "On-Policy Distillation of Language Models" (GKD) and Gu et al. 2024 "MiniLLM", eq. 5):
reverse KL(pi_s || pi_t) = E_{y ~ pi_s}[log pi_s(y) - log pi_t(y)] has the gradient E[(log pi_s - log pi_t) grad
log pi_s] on the student's own tokens, which is the policy gradient with a per-token advantage
    A_t = -(log pi_old(y_t) - log pi_teacher(y_t)),  clipped to [-adv_clip, adv_clip] when adv_clip is set,
plus the sequence advantage of the batch (the driver's `distill.rl_weight` x the GRPO advantage, 0 without it).
It enters the same PPO-clipped importance-ratio loss as GRPO (`grpo.py`):
    r_t = exp(log pi(y_t) - log pi_old(y_t));  l_t = -min(r_t A_t, clip(r_t, 1 - eps_low, 1 + eps_high) A_t)
Departures: the per-token terms carry no future-token sum (discount 0, as NeMo-RL and TRL); A_t uses the sampler's
log-probs (pi_old), not the current policy's, so it is a constant of the update. The teacher's log-probs ride in
`ref_logprobs`: to the learner the teacher is a precomputed reference model. Logged `kl` is the k1 estimate of the
reverse KL, token mean of log pi_old - log pi_teacher.
"""

from __future__ import annotations

import torch

from posttrain.losses.aggregation import get_aggregation
from posttrain.losses.base import Loss, LossInputs, LossOutput, register_loss, token_mean


@register_loss("opd")
class OPDLoss(Loss):
    needs = ("ref_logprobs",)

    def __init__(self, clip_low: float = 0.2, clip_high: float = 0.2, adv_clip: float | None = None,
                 aggregation: str = "token-mean"):
        if clip_low < 0 or clip_high < 0 or (adv_clip is not None and adv_clip <= 0):
            raise ValueError(f"clip_low/clip_high must be >= 0 and adv_clip > 0, got {clip_low}/{clip_high}/"
                             f"{adv_clip}")
        self.clip_low, self.clip_high, self.adv_clip = clip_low, clip_high, adv_clip
        self.aggregation, self._aggregate = aggregation, get_aggregation(aggregation)

    def forward(self, inputs: LossInputs) -> LossOutput:
        logp, mask, teacher = inputs.logprobs, inputs.mask, inputs.ref_logprobs  # [N, T] each
        totals = inputs.resolved_totals()
        old = inputs.old_logprobs if inputs.old_logprobs is not None else logp.detach()
        gap = (old - teacher.to(logp.dtype)).detach()  # [N, T], log pi_old - log pi_teacher
        adv = -gap if self.adv_clip is None else (-gap).clamp(-self.adv_clip, self.adv_clip)
        if inputs.advantages is not None:  # [N]: rl_weight x GRPO advantage, from the driver
            adv = adv + inputs.advantages.to(logp.dtype).unsqueeze(-1)
        ratio = torch.exp((logp - old).clamp(max=20.0))  # clamp: exp overflow -> inf * 0 = nan
        clipped = ratio.clamp(1.0 - self.clip_low, 1.0 + self.clip_high)
        per_token = torch.maximum(-adv * ratio, -adv * clipped)  # [N, T]
        loss = self._aggregate(per_token, mask, totals)
        stats = {"kl": token_mean(gap, mask, totals), "pg_loss": loss.detach(),
                 "ratio": token_mean(ratio.detach(), mask, totals)}
        return LossOutput(loss, stats)

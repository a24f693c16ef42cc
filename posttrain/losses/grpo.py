"""PPO-style clipped policy loss with group-normalised advantages: GRPO and its DAPO / Dr.GRPO variants.

Per token (PPO, Schulman et al. 2017, eq. 7; GRPO, Shao et al. 2024, eq. 3):
    r_t = exp(log pi(y_t) - log pi_old(y_t))
    l_t = -min(r_t A, clip(r_t, 1 - eps_low, 1 + eps_high) A) + kl_coef * KL_t - entropy_coef * H_t
eps_low != eps_high is DAPO's clip-higher (Yu et al. 2025, eq. 10; they use 0.2 / 0.28). The per-token losses
are aggregated by a registered mode (`aggregation.py`): `seq-mean-token-mean` is the GRPO paper's, `token-mean`
DAPO's, `seq-mean-token-sum-norm` Dr.GRPO's (with `group_advantages(scale_std=False)`).
Departures: without `old_logprobs` (one update per rollout batch) pi_old is the detached current policy, so
r = 1 and the gradient is the plain policy gradient, as in TRL and verl. The KL term is aggregated like the
policy term. Entropy is always logged (token mean), and only enters the loss when entropy_coef != 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from posttrain.losses.aggregation import get_aggregation
from posttrain.losses.base import BatchTotals, Loss, LossInputs, LossOutput, register_loss, token_mean
from posttrain.losses.kl import get_kl


@register_loss("grpo")
class GRPOLoss(Loss):
    def __init__(self, clip_low: float = 0.2, clip_high: float = 0.2, aggregation: str = "token-mean",
                 kl_coef: float = 0.0, kl_estimator: str = "k3", entropy_coef: float = 0.0,
                 max_completion_length: int | None = None):
        if clip_low < 0 or clip_high < 0:
            raise ValueError(f"clip_low/clip_high must be >= 0, got {clip_low}/{clip_high}")
        self.clip_low, self.clip_high = clip_low, clip_high
        self.aggregation, self._aggregate = aggregation, get_aggregation(aggregation)
        self.kl_coef, self.kl_estimator, self._kl = kl_coef, kl_estimator, get_kl(kl_estimator)
        self.entropy_coef = entropy_coef
        self.max_completion_length = max_completion_length  # Dr.GRPO's constant; None: the batch's longest

    needs = ("advantages",)
    logs_entropy = True

    @property
    def needs_reference(self) -> bool:
        return self.kl_coef != 0.0

    @property
    def entropy_grad(self) -> bool:
        return self.entropy_coef != 0.0

    def log_ratio(self, logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> Tensor:
        """Token-level log importance ratio [N, T]; GSPO overrides this with its sequence-level one."""
        return logprobs - old_logprobs

    def forward(self, inputs: LossInputs) -> LossOutput:
        logp, mask = inputs.logprobs, inputs.mask  # [N, T]
        totals = inputs.resolved_totals()
        if self.max_completion_length is not None:
            totals = BatchTotals(totals.tokens, totals.sequences, float(self.max_completion_length), totals.pairs,
                                 totals.chosen_tokens)
        old = inputs.old_logprobs if inputs.old_logprobs is not None else logp.detach()
        adv = inputs.advantages.to(logp.dtype).unsqueeze(-1)  # [N, 1]
        ratio = torch.exp(self.log_ratio(logp, old, mask).clamp(max=20.0))  # clamp: exp overflow -> inf * 0 = nan
        clipped = ratio.clamp(1.0 - self.clip_low, 1.0 + self.clip_high)
        pg = torch.maximum(-adv * ratio, -adv * clipped)  # [N, T]
        per_token = pg
        stats = {"pg_loss": self._aggregate(pg, mask, totals).detach()}
        if self.kl_coef != 0.0:
            if inputs.ref_logprobs is None:
                raise ValueError("grpo with kl_coef != 0 needs ref_logprobs: enable the learner's reference "
                                 "model (learner.reference) or pass ref_logprobs in the batch")
            kl = self._kl(logp, inputs.ref_logprobs)
            per_token = per_token + self.kl_coef * kl
            stats["kl"] = token_mean(kl, mask, totals)
        if inputs.entropy is not None:
            stats["entropy"] = token_mean(inputs.entropy, mask, totals)
            if self.entropy_coef != 0.0:
                per_token = per_token - self.entropy_coef * inputs.entropy
        loss = self._aggregate(per_token, mask, totals)
        with torch.no_grad():
            low = (ratio < 1.0 - self.clip_low) & (adv < 0)  # clipped tokens: the gradient is zero there
            high = (ratio > 1.0 + self.clip_high) & (adv > 0)
            stats["clip_frac_low"] = token_mean(low.float(), mask, totals)
            stats["clip_frac_high"] = token_mean(high.float(), mask, totals)
            stats["ratio"] = token_mean(ratio, mask, totals)
        return LossOutput(loss, stats)

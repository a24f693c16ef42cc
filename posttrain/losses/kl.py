"""KL estimators k1/k2/k3 of KL(pi || pi_ref) from samples of pi (Schulman, "Approximating KL Divergence", 2020).

With log_ratio = log pi - log pi_ref at a sampled token: k1 = log_ratio (unbiased, high variance, can be
negative), k2 = log_ratio^2 / 2 (biased, low variance), k3 = exp(-log_ratio) + log_ratio - 1 (unbiased,
non-negative; the estimator of GRPO, Shao et al. 2024, eq. 4). Used either as a loss term (the policy loss adds
`kl_coef * k`, aggregated like the policy term) or in the reward (`kl_penalized_rewards`, the PPO/InstructGPT
form, applied by the driver before advantages). Departure: k3's log ratio is clamped to [-20, 20] so one
extreme token cannot overflow exp; verl clamps the same way.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

KLEstimator = Callable[[Tensor, Tensor], Tensor]
KL_ESTIMATORS: dict[str, KLEstimator] = {}


def register_kl(name: str):
    def add(fn: KLEstimator) -> KLEstimator:
        KL_ESTIMATORS[name] = fn
        return fn

    return add


def get_kl(name: str) -> KLEstimator:
    if name not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {name!r}; choose one of {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[name]


@register_kl("k1")
def k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    # logprobs, ref_logprobs: [N, T] -> [N, T]
    return logprobs - ref_logprobs


@register_kl("k2")
def k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    return 0.5 * (logprobs - ref_logprobs) ** 2


@register_kl("k3")
def k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    log_ratio = (ref_logprobs - logprobs).clamp(-20.0, 20.0)  # log(pi_ref / pi)
    return torch.exp(log_ratio) - log_ratio - 1.0


def kl_penalized_rewards(rewards: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, coef: float,
                         estimator: str = "k1") -> Tensor:
    """Sequence rewards minus coef * summed token KL (KL "in the reward").

    rewards: [N]; logprobs, ref_logprobs, mask: [N, T] (sampler and reference log-probs of the completions).

    >>> r = kl_penalized_rewards(torch.tensor([1.0]), torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -2.0]]),
    ...                          torch.ones(1, 2), coef=0.1)
    >>> round(float(r[0]), 4)
    0.95
    """
    kl = (get_kl(estimator)(logprobs, ref_logprobs) * mask).sum(-1)  # [N]
    return rewards - coef * kl.detach()

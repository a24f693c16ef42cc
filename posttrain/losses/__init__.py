"""Training losses, one per module, each registered by name (`@register_loss`) so recipes select them and new
variants add themselves without touching a dispatcher.

Registered: `sft`, `next_token` (sft.py), `grpo` (grpo.py: GRPO / DAPO clip-higher / Dr.GRPO via options),
`gspo` (gspo.py), `opd` (opd.py: on-policy distillation, reverse KL to a teacher), `dpo`, `bco_pair`, `mpo`,
`bradley_terry`. Helpers: aggregation modes (aggregation.py), KL estimators (kl.py), group-normalised advantages
(advantages.py), SigLIP contrastive loss (siglip.py, used on embeddings outside the causal-LM learner).
"""

from posttrain.losses import bco, dpo, gspo, grpo, mpo, opd, reward_model, sft  # noqa: F401  (registration)
from posttrain.losses.advantages import group_advantages
from posttrain.losses.aggregation import AGGREGATIONS, get_aggregation, register_aggregation
from posttrain.losses.base import (LOSSES, BatchTotals, Loss, LossInputs, LossOutput, build_loss, check_loss_args,
                                   register_loss)
from posttrain.losses.kl import KL_ESTIMATORS, get_kl, kl_penalized_rewards, register_kl
from posttrain.losses.siglip import SigLIPLoss, siglip_loss

__all__ = [
    "AGGREGATIONS", "KL_ESTIMATORS", "LOSSES", "BatchTotals", "Loss", "LossInputs", "LossOutput", "SigLIPLoss",
    "build_loss", "check_loss_args", "get_aggregation", "get_kl", "group_advantages", "kl_penalized_rewards",
    "register_aggregation", "register_kl", "register_loss", "siglip_loss",
]

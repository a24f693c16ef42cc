"""Every stage kind and the function that runs it: the recipe's `kind` -> `fn(ctx: StageContext) -> summary`.

A new kind is a member of the recipe's `Stage` union (`posttrain.recipe`), a module here, and one line in this
table; `tests/posttrain/stages/test_registry.py` checks that the table and the union name the same kinds.
"""

from __future__ import annotations

from typing import Any, Callable

from posttrain.stages import (cold_start, distill, evaluate, merge, preference, pretrain, rejection_sample,
                              reward_model, rl, score_filter, sft, siglip)
from posttrain.stages.context import StageContext

STAGES: dict[str, Callable[[StageContext], dict[str, Any]]] = {
    # pre-training (Keye-VL stages 0-3) and what feeds and follows it
    "pretrain_data": pretrain.run_pretrain_data,
    "siglip": siglip.run_siglip,
    "score_filter": score_filter.run_score_filter,
    "align": pretrain.run_pretraining,
    "pretrain": pretrain.run_pretraining,
    "anneal": pretrain.run_pretraining,
    "merge": merge.run_merge,
    # post-training
    "cold_start_build": cold_start.run_cold_start_build,
    "sft": sft.run_sft,
    "rl": rl.run_rl,
    "distill": distill.run_distill,
    "rejection_sample": rejection_sample.run_rejection_sample,
    "preference": preference.run_preference,
    "reward_model": reward_model.run_reward_model,
    "eval": evaluate.run_eval,
}

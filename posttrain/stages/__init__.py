"""Stage kinds. Each module registers its runner with `posttrain.runner.stage_kind`; importing them all here
keeps the runner ignorant of what kinds exist."""


def register_all() -> None:
    from posttrain.stages import (cold_start, evaluate, merge, preference, pretrain, rejection_sample,  # noqa: F401
                                  reward_model, rl, score_filter, sft, siglip)

"""Stage kinds. Each module registers its runner with `posttrain.runner.stage_kind`; importing them all here
keeps the runner ignorant of what kinds exist."""


def register_all() -> None:
    from posttrain.stages import cold_start, evaluate, preference, rejection_sample, rl, sft  # noqa: F401

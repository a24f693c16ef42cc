"""A real reward model that misbehaves on purpose, for the reward-server tests: each sample's `behaviour` column
says `raise`, `hang`, `slow` (the batch takes `slow_s` more per such sample) or `leak` (the replica keeps `leak_mb`
more resident memory for good), and `delay_s` slows every batch so that a replica can be killed mid-step."""

import time
from collections.abc import Callable

LEAKED = []  # what `leak` samples keep alive


def behaving_reward_model(model: str, delay_s: float = 0.0, max_length: int = 64, slow_s: float = 0.0,
                          leak_mb: int = 0) -> Callable:
    from rewards.reward_model import RewardModelScorer

    scorer = RewardModelScorer(model, max_length=max_length)

    def reward_model(samples):
        behaviours = [s.columns.get("behaviour", "ok") for s in samples]
        if "raise" in behaviours:
            raise RuntimeError("model boom")
        if "hang" in behaviours:
            time.sleep(3600)
        if "leak" in behaviours:
            LEAKED.append(b"x" * (leak_mb * 2**20))  # written, so resident (zeroed pages might not be)
        time.sleep(delay_s + slow_s * behaviours.count("slow"))
        return scorer(samples)

    reward_model.__reward_batched__ = True
    return reward_model

"""The RL step's group filter, its timing and its progress line (issue #32): skipped samples are no siblings, a
group without two scored samples is counted and carries no loss (dropped only with dynamic sampling, which refills),
a refill's time counts once, reward errors show."""

from __future__ import annotations

import pytest
import torch

from posttrain.stages import rl
from posttrain.stages.rl import Groups, _headline, timed
from rewards.result import RewardResult


def scored(total: float) -> RewardResult:
    return RewardResult(total)


def skipped() -> RewardResult:  # a failed sample under on_error: skip
    return RewardResult(None, {}, "timeout", "slow", skipped=True)


RESULTS = [scored(1.0), skipped(), scored(0.0),  # two scored: the skipped sample is no sibling
           scored(1.0), skipped(), skipped(),  # one scored: no baseline
           scored(0.5), scored(0.5), scored(0.5)]  # all equal


def test_a_group_with_one_scored_sample_is_counted_and_kept_so_the_batch_keeps_its_size():
    groups = Groups(group_size=3, drop_constant=False)
    groups.add(["p0", "p1", "p2"], list(range(9)), RESULTS)
    rows, completions, kept = groups.first(3)  # the learners split the batch by its size: nothing dropped
    assert rows == ["p0", "p1", "p2"] and completions == list(range(9)) and kept == RESULTS
    assert groups.metrics() == {"rl/groups_unscored": 1, "rl/zero_variance_fraction": 0.0}
    # its one scored sample gets advantage 0 (no baseline), the skipped ones are masked in `train`
    advantages = rl.group_advantages(torch.tensor([r.total or 0.0 for r in kept]), 3,
                                     scored=torch.tensor([rl._scored(r) for r in kept]))
    assert advantages[3:6].tolist() == [0.0, 0.0, 0.0]


def test_with_dynamic_sampling_an_unscored_group_is_dropped_like_a_constant_one():
    groups = Groups(group_size=3, drop_constant=True)
    groups.add(["p0", "p1", "p2"], list(range(9)), RESULTS)
    assert groups.first(3)[0] == ["p0"]
    assert groups.metrics() == {"rl/groups_unscored": 1, "rl/zero_variance_fraction": 1 / 3}


def test_dynamic_sampling_drops_constant_groups_by_their_scored_rewards():
    groups = Groups(group_size=3, drop_constant=True)
    groups.add(["p0", "p1"], list(range(6)), [scored(1.0), skipped(), scored(1.0),  # scored rewards all equal
                                              scored(1.0), scored(0.0), skipped()])
    assert groups.first(2)[0] == ["p1"]
    assert groups.metrics() == {"rl/groups_unscored": 0, "rl/zero_variance_fraction": 0.5}  # 1 of 2 groups seen


def test_a_phase_timed_inside_another_counts_once(monkeypatch):
    clock = iter([0.0, 1.0, 4.0, 6.0])  # advantages starts at 0; refill runs from 1 to 4; advantages ends at 6
    monkeypatch.setattr(rl.time, "perf_counter", lambda: next(clock))
    timings: dict[str, float] = {}
    with timed(timings, "advantages"):
        with timed(timings, "refill"):
            pass
    assert timings == {"timing/refill_s": 3.0, "timing/advantages_s": 3.0}  # 6 s in all, as the step took


def test_the_progress_line_shows_reward_errors_and_the_worst_component():
    metrics = {"reward/mean": 0.0, "reward/error_rate": 1.0, "reward/error_rate/f": 1.0,
               "reward/error_rate/format": 0.25, "train/loss": 0.0, "timing/train_s": 2.0}
    assert _headline(metrics) == "reward 0.00  errors 100% (f)  loss 0.000  2.0s/step"
    assert "errors" not in _headline({"reward/mean": 1.0, "reward/error_rate": 0.0})


@pytest.mark.parametrize("bad", [{"max_error_rate": 1.5}, {"error_window": 0}])
def test_the_recipe_bounds_are_validated(bad):
    from pydantic import ValidationError

    from posttrain.recipe import RewardSection

    with pytest.raises(ValidationError, match=next(iter(bad))):
        RewardSection(**bad)
    assert (RewardSection().max_error_rate, RewardSection().error_window) == (0.5, 3)


def test_colocated_engines_wake_only_after_the_learners_returned_their_cached_gpu_memory():
    import types

    calls = []
    record = lambda name: (lambda: calls.append(name))  # noqa: E731
    loop = types.SimpleNamespace(
        ctx=types.SimpleNamespace(recipe=types.SimpleNamespace(cluster=types.SimpleNamespace(placement="colocated"))),
        rollout=types.SimpleNamespace(sleep=record("engines sleep"), wake_up=record("engines wake")),
        learners=types.SimpleNamespace(release_cached_memory=record("learners release cache")))
    with rl.RlLoop.engines_asleep(loop):
        calls.append("train")
    assert calls == ["engines sleep", "train", "learners release cache", "engines wake"]

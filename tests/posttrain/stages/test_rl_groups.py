"""The RL step's group filter, its timing and its progress line (issue #32): skipped samples are no siblings, a
group without two scored samples is dropped and counted, a refill's time counts once, reward errors show."""

from __future__ import annotations

import pytest

from posttrain.stages import rl
from posttrain.stages.rl import Groups, _headline, timed
from rewards.result import RewardResult


def scored(total: float) -> RewardResult:
    return RewardResult(total)


def skipped() -> RewardResult:  # a failed sample under on_error: skip
    return RewardResult(None, {}, "timeout", "slow", skipped=True)


def test_a_group_with_one_scored_sample_is_dropped_and_counted():
    groups = Groups(group_size=3, drop_constant=False)
    results = [scored(1.0), skipped(), scored(0.0),  # two scored: kept, the skipped sample no sibling
               scored(1.0), skipped(), skipped(),  # one scored: no baseline, dropped
               scored(0.5), scored(0.5), scored(0.5)]  # all equal: kept without dynamic sampling
    groups.add(["p0", "p1", "p2"], list(range(9)), results)
    rows, completions, kept = groups.first(3)
    assert rows == ["p0", "p2"] and completions == [0, 1, 2, 6, 7, 8] and kept == results[:3] + results[6:]
    assert groups.metrics() == {"rl/groups_unscored": 1, "rl/zero_variance_fraction": 0.0}


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

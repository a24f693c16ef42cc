"""The RL step's group filter, its timing and its progress line (issue #32): skipped samples are no siblings, a
group without two scored samples is counted and carries no loss (dropped only with dynamic sampling, which refills),
a refill's time counts once, reward errors show; the advantages phase returns what it kept by name (issue #35)."""

from __future__ import annotations

import pytest
import torch

from posttrain.losses import group_advantages
from posttrain.stages.rl import Groups, RlLoop, is_scored, loop, timed
from posttrain.stages.rl.loop import _headline
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
    advantages = group_advantages(torch.tensor([r.total or 0.0 for r in kept]), 3,
                                  scored=torch.tensor([is_scored(r) for r in kept]))
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
    monkeypatch.setattr(loop.time, "perf_counter", lambda: next(clock))
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
    fake = types.SimpleNamespace(
        ctx=types.SimpleNamespace(recipe=types.SimpleNamespace(cluster=types.SimpleNamespace(placement="colocated"))),
        rollout=types.SimpleNamespace(sleep=record("engines sleep"), wake_up=record("engines wake")),
        learners=types.SimpleNamespace(release_cached_memory=record("learners release cache")))
    with RlLoop.engines_asleep(fake):
        calls.append("train")
    assert calls == ["engines sleep", "train", "learners release cache", "engines wake"]


def test_the_advantages_phase_learns_pass_rates_refills_and_names_what_it_keeps():
    import types

    from posttrain.stages.rl import AdvantageResult
    from posttrain.stages.rl.curriculum import Curriculum

    def pool(totals):  # the reward pool's answer for these samples' totals
        return types.SimpleNamespace(results=[scored(t) for t in totals], metrics={"samples": len(totals)})

    loop = RlLoop.__new__(RlLoop)  # the phase's own methods, with fake rollout and rewards
    loop.stage = types.SimpleNamespace(group_size=2, prompts_per_step=2, dynamic_sampling=True, max_refills=1,
                                       std_normalize=False)
    loop.curriculum = Curriculum()
    drawn = []
    loop.draw = lambda step, offset=0: drawn.append(offset) or [{"id": "p2"}, {"id": "p3"}]
    loop.generate = lambda rows, step, refill=0: ["c4", "c5", "c6", "c7"]
    loop.score = lambda rows, completions: pool([0.0, 1.0, 1.0, 1.0])  # p2 spreads, p3 is constant
    rows = [{"id": "p0"}, {"id": "p1"}]
    timings: dict[str, float] = {}
    kept = loop.advantages(0, rows, ["c0", "c1", "c2", "c3"], pool([1.0, 0.0, 1.0, 1.0]), timings)
    assert isinstance(kept, AdvantageResult)
    assert [r["id"] for r in kept.rows] == ["p0", "p2"]  # p1 and p3 had no spread: dropped, one refill
    assert kept.completions == ["c0", "c1", "c4", "c5"] and [r.total for r in kept.results] == [1.0, 0.0, 0.0, 1.0]
    assert kept.advantages.tolist() == [0.5, -0.5, -0.5, 0.5]  # reward - group mean (std_normalize off)
    assert drawn == [8]  # the refill draws from further along the stream: 4 x refill 1 x P
    assert (kept.stats["rl/refills"], kept.stats["rl/groups_kept"], kept.stats["reward_pool/samples"]) == (1, 2, 4)
    assert kept.stats["rl/zero_variance_fraction"] == 0.5  # 2 of the 4 groups seen
    assert set(loop.curriculum.records) == {"p0", "p1"}  # the step's own prompts learn their pass rates
    assert "timing/refill_s" in timings

"""Reward health (issue #32): a failing component keeps the others' credit and names the user's line; error
rates per component; the `max_error_rate` bound over a window of steps."""

from __future__ import annotations

import pytest

from rewards.combine import combine
from rewards.health import RewardHealth, RewardHealthError
from rewards.pool import apply_policy
from rewards.result import RewardResult, summarize
from rewards.sample import Sample

USER_REWARDS = '''\
def broken(sample):
    gold = sample.columns["ground_truth"]
    return float(sample.completion == gold)


def quarter(sample):
    return 0.25


def trl_style(completions, ground_truth, **kwargs):
    return [1.0 for _ in completions]
'''  # `broken` raises on line 2; `trl_style` is defined on line 10


@pytest.fixture()
def user_file(tmp_path):
    path = tmp_path / "user_rewards.py"
    path.write_text(USER_REWARDS)
    return path


def samples(n: int) -> list[Sample]:
    return [Sample.from_row({"prompt": "2+2?", "completion": "4", "answer": "4"}) for _ in range(n)]


def test_a_failing_component_leaves_the_other_components_credit(user_file):
    reward = combine({f"{user_file}:broken": 1.0, f"{user_file}:quarter": 2.0})
    rows = reward(samples(2))
    for row in rows:
        assert row.total == 0.5  # 2 x 0.25 from `quarter`; `broken` adds nothing and takes nothing away
        assert row.components == {"quarter": 0.25}
        assert row.error == "exception" and set(row.component_errors) == {"broken"}
        # the user's file and line, not rewards/combine.py or the adapter
        assert "KeyError: 'ground_truth' (at user_rewards.py:2)" in row.component_errors["broken"]
    apply_policy(rows, "zero")
    assert [r.total for r in rows] == [0.5, 0.5]  # zero: the failed component adds 0, the other keeps its credit
    skipped = reward(samples(1))
    apply_policy(skipped, "skip")
    assert (skipped[0].total, skipped[0].skipped) == (None, True)  # skip: out of training altogether


def test_a_call_that_fails_before_entering_the_function_names_its_definition(user_file):
    [row] = combine({f"{user_file}:trl_style": 1.0})(samples(1))  # the data's column is `answer`
    assert row.total is None and row.error == "exception"
    assert "missing 1 required positional argument: 'ground_truth'" in row.message
    assert "(at user_rewards.py:10, the function's definition)" in row.message


def test_error_rate_per_component():
    ok = RewardResult(1.0, {"a": 1.0, "b": 0.0})
    a_failed = RewardResult(0.0, {"b": 0.0}, "exception", "a: boom", component_errors={"a": "a: boom"})
    both = RewardResult(None, {}, "exception", "a: boom; b: bad", component_errors={"a": "a: boom", "b": "b: bad"})
    timeout = RewardResult.failed("timeout", "slow")
    batch = [ok, a_failed, both, timeout]
    metrics = summarize(batch)
    assert (metrics["reward/error_rate/a"], metrics["reward/error_rate/b"]) == (0.5, 0.25)  # 2 of 4, 1 of 4
    assert metrics["reward/error_rate"] == 0.75  # 3 of 4 samples had an error; the timeout names no component
    health = RewardHealth(max_error_rate=1.0, window=1)
    health.record(batch[:2])
    health.record(batch[2:])  # a refill: the same step
    assert health.end_step() == {"reward/error_rate": 0.75, "reward/error_rate/a": 0.5, "reward/error_rate/b": 0.25}
    assert health.end_step() == {"reward/error_rate": 0.0}  # an empty step


def test_the_bound_stops_with_the_rate_the_component_and_the_users_line(user_file):
    reward = combine({f"{user_file}:broken": 1.0, f"{user_file}:quarter": 1.0})
    health = RewardHealth(max_error_rate=0.5, window=2)
    health.record(reward(samples(4)))
    health.end_step()
    health.check()  # one step of a two-step window: not yet
    health.record(reward(samples(4)))
    health.end_step()
    with pytest.raises(RewardHealthError) as raised:
        health.check()
    message = str(raised.value)
    assert "reward component 'broken' failed on 100% of samples (8 of 8) over the last 2 steps" in message
    assert "reward.max_error_rate=0.5" in message
    assert "KeyError: 'ground_truth' (at user_rewards.py:2)" in message and str(user_file) in message


def test_the_window_forgives_one_bad_step_and_a_short_stage_is_checked_at_its_end():
    bad, good = RewardResult(0.0, {}, "exception", "x: boom", component_errors={"x": "x: boom"}), RewardResult(1.0)
    health = RewardHealth(max_error_rate=0.5, window=3)
    for batch in ([bad, bad], [good, good], [good, good], [bad, good]):
        health.record(batch)
        health.end_step()
        health.check()  # windows: 2 of 6, then 1 of 6 failed: never above 0.5
    short = RewardHealth(max_error_rate=0.5, window=3)
    short.record([bad, bad, good])
    short.end_step()
    short.check()  # the window is not full
    with pytest.raises(RewardHealthError, match="'x' failed on 67% of samples \\(2 of 3\\) over the last 1 step,"):
        short.check(last_step=True)
    assert short.headline() == "reward errors: x 67% (2 of 3 samples)"


def test_errors_that_name_no_component_are_bounded_too():
    health = RewardHealth(max_error_rate=0.5, window=1)
    health.record([RewardResult.failed("timeout", "gave no result within 1s"), RewardResult(1.0)] * 2
                  + [RewardResult.failed("crash", "died")])
    health.end_step()
    with pytest.raises(RewardHealthError, match="the reward failed on 60% of samples \\(3 of 5\\).*first error: "
                                                "gave no result within 1s"):
        health.check()

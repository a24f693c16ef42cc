"""The Ray reward pool under rewards that raise, hang, return NaN, or kill their process.

One loopback Ray cluster and one pool serve the whole module (workers take seconds to start); each sample's
`behaviour` column picks how the test reward misbehaves.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rewards.pool import PoolConfig, RewardFailed, RewardPool
from runtime.local_ray import local_ray
from rewards.sample import Sample

FAULTY = f"{Path(__file__).parents[1] / 'rewards' / 'plugins' / 'faulty.py'}:behave"  # shared with tests/rewards


def sample(behaviour: str, value: float = 1.0) -> Sample:
    return Sample.from_row({"prompt": "q", "completion": "c", "behaviour": behaviour, "value": value})


@pytest.fixture(scope="module")
def cluster():
    with local_ray(num_cpus=2, object_store_mb=128):
        yield


@pytest.fixture(scope="module")
def pool(cluster):
    with RewardPool(FAULTY, config=PoolConfig(num_workers=2, timeout_s=1.0, grace_s=1.0)) as pool:
        yield pool


@pytest.fixture(autouse=True)
def default_policy(request):
    if "pool" in request.fixturenames:
        request.getfixturevalue("pool").config.on_error = "zero"


def test_good_samples_keep_their_order_across_workers(pool):
    batch = pool.score([sample("ok", float(i)) for i in range(40)])
    assert [r.total for r in batch.results] == [float(i) for i in range(40)]
    assert batch.metrics["reward/errors"] == 0 and batch.metrics["reward/mean"] == pytest.approx(19.5)


@pytest.mark.slow
def test_one_batch_survives_every_kind_of_failure(pool):
    behaviours = ["ok", "raise", "ok", "hang", "nan", "ok", "exit", "wrong_type", "segfault", "inf", "ok", "ok"]
    batch = pool.score([sample(b, float(i)) for i, b in enumerate(behaviours)])
    errors = [r.error for r in batch.results]
    assert errors == [None, "exception", None, "timeout", "invalid", None, "crash", "invalid", "crash", "invalid",
                      None, None]
    assert [r.total for r, b in zip(batch.results, behaviours) if b == "ok"] == [0.0, 2.0, 5.0, 10.0, 11.0]
    assert all(r.total == 0.0 and r.message for r in batch.results if r.error)  # on_error: zero, yet recorded
    assert "boom" in batch.results[1].message and "1s" in batch.results[3].message
    assert "died" in batch.results[6].message and "died" in batch.results[8].message
    m = batch.metrics
    assert (m["reward/errors/exception"], m["reward/errors/timeout"], m["reward/errors/invalid"],
            m["reward/errors/crash"]) == (1, 1, 3, 2)
    assert m["reward/on_error"] == "zero" and m["reward/processes_replaced"] >= 3
    # the replaced workers serve the next batch
    assert [r.total for r in pool.score([sample("ok", 7.0)] * 4).results] == [7.0] * 4


def test_skip_policy_excludes_failed_samples(pool):
    pool.config.on_error = "skip"
    batch = pool.score([sample("ok", 3.0), sample("nan"), sample("raise")])
    assert [(r.total, r.skipped, r.error) for r in batch.results] == [
        (3.0, False, None), (None, True, "invalid"), (None, True, "exception")]
    assert batch.metrics["reward/skipped"] == 2 and batch.metrics["reward/mean"] == 3.0
    assert batch.metrics["reward/on_error"] == "skip"


def test_fail_policy_raises_after_the_whole_batch(pool):
    pool.config.on_error = "fail"
    with pytest.raises(RewardFailed, match="1 of 3 samples failed") as failure:
        pool.score([sample("ok", 1.0), sample("raise"), sample("ok", 2.0)])
    results = failure.value.batch.results
    assert [r.total for r in results] == [1.0, None, 2.0] and results[1].error == "exception"


@pytest.mark.slow
def test_a_hang_outside_python_is_killed_at_the_deadline(pool):
    """A C loop holding the GIL: the worker kills the reward's process at the deadline, not the chunk's."""
    batch = pool.score([sample("gil_hang"), sample("ok", 4.0)])
    assert batch.results[0].error == "timeout" and "killed and replaced" in batch.results[0].message
    assert batch.results[1].total == 4.0
    assert batch.metrics["reward/processes_replaced"] >= 1 and batch.metrics["timing/reward_s"] < 1.0 + 4.0


@pytest.mark.slow
def test_a_worker_that_died_while_idle_is_replaced_before_scoring(pool):
    import ray

    ray.kill(pool.actors[0], no_restart=True)
    batch = pool.score([sample("ok", 1.0), sample("ok", 2.0), sample("ok", 3.0)])
    assert [r.total for r in batch.results] == [1.0, 2.0, 3.0]
    assert batch.metrics["reward/errors"] == 0


def test_a_broken_spec_fails_before_any_worker_starts(cluster):
    with pytest.raises(ValueError, match="does not exist"):
        RewardPool("tests/rewards/plugins/missing.py:f")


def test_unknown_error_policy_is_rejected():
    with pytest.raises(ValueError, match="on_error"):
        PoolConfig(on_error="ignore")

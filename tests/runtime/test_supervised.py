"""The supervised actor pool (`runtime.supervised`) on a loopback Ray, with a tiny actor: a call whose actor dies is
reported with its item and the actor replaced; a call past its deadline is "hung" and replaced, and the round's
strikes exhaust the budget; a call that raises leaves its actor alone; an actor that died while idle is replaced
by `new_round` without a strike."""

from __future__ import annotations

import os
import time

import pytest
import ray

from runtime.supervised import Supervised


class Echo:
    def ready(self) -> int:
        return os.getpid()

    def echo(self, value, sleep_s: float = 0.0):
        time.sleep(sleep_s)
        return value

    def die(self):
        os._exit(1)

    def boom(self):
        raise ValueError("boom")


@pytest.fixture
def pool(cluster):
    pool = Supervised(ray.remote(Echo).options(num_cpus=0.1, max_restarts=0), (), 2, startup_timeout_s=60,
                      grace_s=2.0, max_replacements=2)
    try:
        yield pool
    finally:
        pool.close()


def run(pool: Supervised) -> dict:
    """Wait for every call in flight and every start: {item: outcome}."""
    outcomes = {}
    while pool.busy() or len(pool.free()) < len(pool.slots):
        outcomes.update({o.item: o for o in pool.wait()})
    return outcomes


def test_a_dead_actor_is_replaced_and_its_item_reported(pool):
    pids = pool.ready_replies
    pool.send(0, "a", 30.0, lambda actor: actor.die.remote())
    pool.send(1, "b", 30.0, lambda actor: actor.echo.remote("b"))
    outcomes = run(pool)
    assert (outcomes["a"].kind, outcomes["a"].slot, outcomes["b"].kind, outcomes["b"].reply) == ("died", 0, "answered",
                                                                                               "b")
    assert (pool.replaced, pool.strikes, pool.exhausted) == (1, 1, False)
    assert ray.get(pool.slots[0].actor.ready.remote()) not in pids
    assert ray.get(pool.slots[1].actor.ready.remote()) == pids[1]


def test_a_hung_call_is_replaced_at_its_deadline_and_strikes_exhaust_the_budget(pool):
    start = time.perf_counter()
    pool.send(0, "slow", 0.5, lambda actor: actor.echo.remote("slow", 60.0))
    pool.send(1, "raises", 30.0, lambda actor: actor.boom.remote())
    outcomes = run(pool)
    assert outcomes["slow"].kind == "hung" and outcomes["slow"].allowed_s == 0.5
    assert outcomes["raises"].kind == "failed" and "boom" in str(outcomes["raises"].error)
    assert time.perf_counter() - start < 30 and (pool.replaced, pool.exhausted) == (1, False)
    pool.send(0, "again", 0.5, lambda actor: actor.echo.remote("again", 60.0))
    assert run(pool)["again"].kind == "hung" and pool.exhausted  # two strikes: max_replacements=2


def test_new_round_replaces_an_actor_that_died_idle_without_a_strike(pool):
    pool.send(0, "x", 30.0, lambda actor: actor.die.remote())
    run(pool)
    ray.wait([pool.slots[1].actor.die.remote()])  # behind the supervisor's back: it died while idle
    pool.new_round()
    assert (pool.replaced, pool.strikes) == (1, 0)
    run(pool)
    pool.send(1, "y", 30.0, lambda actor: actor.echo.remote("y"))
    assert run(pool)["y"].reply == "y"

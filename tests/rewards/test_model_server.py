"""Reward-model servers on a real loopback Ray cluster, with a tiny reward model of the trained one's architecture
(keye-tiny's decoder, a random score head) and a tiny Llama judge: served scores equal in-pool ones, both
dispatches use every replica, a SIGKILLed replica is replaced mid-step, a raising or hanging model marks only its
samples while their rule rewards stay, a batch that times out is scored again a sample at a time within a bounded
wait, a replica that leaks memory is replaced, GPU requests that cannot be met fail, a bad `serve` key is refused."""

from __future__ import annotations

import os
import re
import signal
import threading
from pathlib import Path

import pytest
import torch

from posttrain.judge_engine import engine_backed
from posttrain.recipe import Recipe, RecipeError
from posttrain.recipe_checks import load_recipe
from posttrain.stages.common import training_reward_pool
from rewards import load_reward
from rewards.model_server import ModelReplicas, ServeConfig
from rewards.pool import PoolConfig, RewardPool
from rewards.reward_model import RewardModelScorer
from rewards.sample import Sample
from rewards.served import ServedComponent, ServedRewards

BEHAVING = f"{Path(__file__).parent / 'plugins' / 'served.py'}:behaving_reward_model"


@pytest.fixture(scope="module")
def cluster_gpus():
    """The conftest `cluster` gets one logical GPU here, for the GPU-request errors."""
    return 1


@pytest.fixture(scope="module")
def rm_dir(tiny_model_dir, tmp_path_factory):
    """A reward model as the reward_model stage starts one, with a random head so that scores differ."""
    from transformers import AutoModelForSequenceClassification

    from posttrain.reward_model_init import init_reward_model

    out = tmp_path_factory.mktemp("served") / "rm"
    init_reward_model(tiny_model_dir, out)
    model = AutoModelForSequenceClassification.from_pretrained(str(out))
    torch.manual_seed(0)
    with torch.no_grad():
        model.score.weight.normal_()
    model.save_pretrained(out)
    return out


def step_samples(n: int, behaviours: dict[int, str] | None = None) -> list[Sample]:
    """Addition answers, every third one wrong; `behaviours` makes chosen samples misbehave in the served model."""
    rows = [{"prompt": f"What is {i} + 7? /no_think", "completion": f"\\boxed{{{i + 7 + (i % 3 == 0)}}}",
             "answer": str(i + 7), "behaviour": (behaviours or {}).get(i, "ok")} for i in range(n)]
    return [Sample.from_row(row) for row in rows]


def recipe(rm_dir, serve: dict | None = None, spec: str = "reward_model", options: dict | None = None) -> Recipe:
    rm = {"spec": spec, "weight": 0.5, "options": {"model": str(rm_dir), "max_length": 64, **(options or {})}}
    if serve is not None:
        rm["serve"] = serve
    return Recipe.model_validate({"name": "t", "stages": [{"kind": "rl"}],
                                  "reward": {"components": [{"spec": "math"}, rm], "timeout_s": 5.0}})


def test_served_scores_equal_in_pool_scores(cluster, rm_dir):
    samples = step_samples(12)
    with training_reward_pool(recipe(rm_dir)) as pool:  # no `serve`: the pool, as before
        assert isinstance(pool, RewardPool)
        in_pool = pool.score(samples)
    with training_reward_pool(recipe(rm_dir, {"replicas": 2, "cpus": 0.5, "batch_size": 5})) as served:
        assert isinstance(served, ServedRewards)
        out = served.score(samples)
    for expected, result in zip(in_pool.results, out.results, strict=True):
        assert expected.error is None and result.error is None
        assert sorted(result.components) == sorted(expected.components) == ["math", "reward_model"]
        assert result.components["math"] == expected.components["math"]
        assert result.components["reward_model"] == pytest.approx(expected.components["reward_model"], abs=1e-5)
        assert result.total == pytest.approx(expected.total, abs=1e-5)
    assert len({round(r.components["reward_model"], 5) for r in out.results}) > 1  # the head is not constant
    m = out.metrics
    assert m["reward/components/reward_model"] == pytest.approx(in_pool.metrics["reward/components/reward_model"],
                                                                abs=1e-5)
    assert (m["reward_server/reward_model/batches"], m["reward_server/reward_model/batch_size"]) == (3, 4.0)
    assert m["reward_server/reward_model/latency_s"] > 0 and m["reward_server/reward_model/errors"] == 0


@pytest.fixture(scope="module")
def replicas(cluster, rm_dir):
    """Two replicas of a reward model slowed to 50 ms a batch, so a step of 16 one-sample batches lasts long
    enough to kill a replica during it."""
    config = ServeConfig(replicas=2, cpus=0.25, batch_size=1, timeout_s=10.0)
    server = ModelReplicas(BEHAVING, {"model": str(rm_dir), "delay_s": 0.05}, config)
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("dispatch", ["random", "least_loaded"])
def test_every_replica_gets_work_under_each_dispatch(replicas, dispatch):
    replicas.config.dispatch = dispatch
    results, metrics = replicas.score(step_samples(8))
    counts = [metrics[f"reward_server/reward_model/replica_{k}/samples"] for k in range(2)]
    assert sum(counts) == 8 and min(counts) > 0, counts
    assert all(r.error is None for r in results) and metrics["reward_server/reward_model/batches"] == 8


def test_a_replica_killed_mid_step_is_replaced_and_every_sample_scored(replicas, rm_dir):
    import ray

    replicas.config.dispatch = "random"  # the dead replica's own batches must wait for its replacement
    samples = step_samples(16)
    expected = RewardModelScorer(str(rm_dir), max_length=64)(samples)
    victim = ray.get(replicas.replicas[0].actor.pid.remote())
    killer = threading.Timer(0.15, os.kill, (victim, signal.SIGKILL))
    killer.start()
    results, metrics = replicas.score(samples)
    killer.join()
    assert [r.error for r in results] == [None] * 16
    assert [r.total for r in results] == pytest.approx(expected, abs=1e-5)
    assert metrics["reward_server/reward_model/replicas_replaced"] == 1
    assert ray.get(replicas.replicas[0].actor.pid.remote()) != victim
    assert metrics["reward_server/reward_model/batches"] == 17  # the batch in flight was sent again


def test_a_raising_or_hanging_model_marks_only_its_samples_and_keeps_their_rule_rewards(cluster, rm_dir):
    samples = step_samples(5, {1: "raise", 4: "hang"})  # batches [0, 1], [2, 3], [4]
    serve = ServeConfig(replicas=2, cpus=0.25, batch_size=2, timeout_s=1.0, startup_timeout_s=60.0)
    component = ServedComponent(BEHAVING, 0.5, {"model": str(rm_dir)}, serve)
    with ServedRewards({"math": 1.0}, [component], PoolConfig(num_workers=1, timeout_s=5.0)) as rewards:
        batch = rewards.score(samples)
    rm = RewardModelScorer(str(rm_dir), max_length=64)(samples)
    results = batch.results
    assert [r.error for r in results] == [None, "exception", None, None, "timeout"]
    assert "component 'reward_model' (served): RuntimeError: model boom" in results[1].message
    assert "gave no answer within 1s for this sample alone; the replica was killed and replaced" in results[4].message
    assert [r.components["math"] for r in results] == [0.0, 1.0, 1.0, 0.0, 1.0]  # the rule reward of every sample
    for i in (0, 2, 3):
        assert results[i].total == pytest.approx(results[i].components["math"] + 0.5 * rm[i], abs=1e-5)
    # on_error: zero, the error recorded: the failed model adds 0 and the math credit stays (issue #32)
    assert results[1].total == results[4].total == 1.0
    m = batch.metrics
    assert (m["reward/errors/exception"], m["reward/errors/timeout"], m["reward/errors"]) == (1, 1, 2)
    assert m["reward_server/reward_model/replicas_replaced"] == 1  # the hung replica


def served(rm_dir, config: ServeConfig, samples: list[Sample], **options):
    """One step on a fresh `ModelReplicas` of the misbehaving model: (results, its metrics)."""
    server = ModelReplicas(BEHAVING, {"model": str(rm_dir), **options}, config)
    try:
        return server.score(samples)
    finally:
        server.close()


def test_a_sample_hanging_in_a_batch_is_the_only_one_marked_and_the_wait_is_bounded(cluster, rm_dir):
    # one batch of 20; a third replica, so that once the hang took a second one no sample waits for a restart
    samples = step_samples(20, {5: "hang"})
    config = ServeConfig(replicas=3, cpus=0.25, batch_size=20, timeout_s=1.0, batch_timeout_s=3.0)
    results, metrics = served(rm_dir, config, samples)
    expected = RewardModelScorer(str(rm_dir), max_length=64)(samples)
    assert [r.error for r in results] == [None] * 5 + ["timeout"] + [None] * 14
    innocent = [i for i in range(20) if i != 5]
    assert [results[i].total for i in innocent] == pytest.approx([expected[i] for i in innocent], abs=1e-5)
    assert results[5].message == ("reward server gave no answer within 1s for this sample alone, scored again "
                                  "after its batch of 20 gave none within 3s; the replica was killed and replaced")
    m = {k.removeprefix("reward_server/reward_model/"): v for k, v in metrics.items()}
    # the batch, then each sample alone; the batch's replica and the one the hang held were replaced
    assert (m["batches"], m["replicas_replaced"]) == (21, 2)
    # before: the batch alone had 20 x timeout_s = 20 s; now 3 s and the re-scoring (1 s of it the hang)
    assert m["wall_s"] < 20


def test_scoring_a_timed_out_batch_again_stops_when_its_budget_is_spent(cluster, rm_dir):
    # every sample takes 0.6 s: the batch 3.6 s, past its 1.8 s; alone each fits its 1.2 s, but after two of them
    # 0.6 s of the batch's 1.8 s is left, so the third is cut there and the rest never sent
    samples = step_samples(6, dict.fromkeys(range(6), "slow"))
    config = ServeConfig(replicas=1, cpus=0.25, batch_size=6, timeout_s=1.2, batch_timeout_s=1.8)
    results, metrics = served(rm_dir, config, samples, slow_s=0.6)
    expected = RewardModelScorer(str(rm_dir), max_length=64)(samples[:2])
    assert [r.error for r in results] == [None, None] + ["timeout"] * 4
    assert [r.total for r in results[:2]] == pytest.approx(expected, abs=1e-5)
    assert re.fullmatch(r"reward server gave no answer within 0\.[0-6]\d*s for this sample alone, scored again after "
                        r"its batch of 6 gave none within 1\.8s \(what was left of their 1\.8s, "
                        r"serve\.batch_timeout_s\); the replica was killed and replaced", results[2].message)
    assert {r.message for r in results[3:]} == {
        "not scored: its batch of 6 gave no answer within 1.8s, and scoring its samples again one at a time used up "
        "their 1.8s (serve.batch_timeout_s) before this one's turn; raise serve.batch_timeout_s if the model is this "
        "slow"}
    m = {k.removeprefix("reward_server/reward_model/"): v for k, v in metrics.items()}
    assert (m["batches"], m["replicas_replaced"]) == (4, 2)  # the batch and three samples alone


def test_a_replica_that_leaks_memory_is_replaced_saying_which_and_how_much(cluster, rm_dir, capsys):
    import ray

    config = ServeConfig(replicas=1, cpus=0.25, batch_size=1, timeout_s=10.0)
    server = ModelReplicas(BEHAVING, {"model": str(rm_dir), "leak_mb": 384}, config)
    try:
        _, metrics = server.score(step_samples(2))
        held = metrics["reward_server/reward_model/rss_max_mb"]
        assert metrics["reward_server/reward_model/replicas_replaced"] == 0 and held > 0
        server.config.memory_mb = bound = int(held) + 128  # the leak of 384 MB goes past it
        pid = ray.get(server.replicas[0].actor.pid.remote())
        samples = step_samples(3, {1: "leak"})
        results, metrics = server.score(samples)
        assert ray.get(server.replicas[0].actor.pid.remote()) != pid
    finally:
        server.close()
    expected = RewardModelScorer(str(rm_dir), max_length=64)(samples)
    assert [r.error for r in results] == [None] * 3  # the leaking batch's score stands; sample 2 on the new replica
    assert [r.total for r in results] == pytest.approx(expected, abs=1e-5)
    assert metrics["reward_server/reward_model/replicas_replaced"] == 1
    line = re.search(rf"reward server 'reward_model': replica 0 \(pid {pid}\) holds (\d+) MB, over its bound of "
                     rf"{bound} MB \(memory_mb={bound}\); replacing it", capsys.readouterr().err)
    assert line and int(line[1]) >= held + 384 - 16, line


def test_serve_bounds_are_validated_and_reach_the_servers(rm_dir):
    with pytest.raises(ValueError, match=r"memory_mb\n  Input should be greater than 0"):
        ServeConfig(memory_mb=0)
    with pytest.raises(ValueError, match=r"reward deadline must be a finite number of seconds > 0, got nan"):
        ServeConfig(batch_timeout_s=float("nan"))
    config = recipe(rm_dir, {"batch_timeout_s": 30, "memory_mb": 8192}).reward.components[1].serve
    assert isinstance(config, ServeConfig)  # the recipe's section is what the servers get (posttrain.stages.common)
    assert (config.batch_timeout_s, config.memory_mb) == (30.0, 8192)
    assert (ServeConfig().batch_timeout_s, ServeConfig().memory_mb) == (60.0, None)
    with pytest.raises(Exception, match=r"memory_mb\n  Input should be greater than 0"):
        recipe(rm_dir, {"memory_mb": 0})


def test_gpu_requests_that_cannot_be_met_fail_saying_what_is_missing(cluster, rm_dir):
    options = {"model": str(rm_dir)}
    with pytest.raises(RuntimeError, match=r"asks for 2 replicas x 1 GPU .* the Ray cluster has 1 GPUs"):
        ModelReplicas("reward_model", options, ServeConfig(replicas=2, cpus=0.25, gpus=1))
    with pytest.raises(RuntimeError, match=r"failed to start: RuntimeError: reward server reserved 1 GPU\(s\) "
                                           r"\(Ray GPU ids \['0'\].* sees no CUDA device"):
        ModelReplicas("reward_model", options, ServeConfig(replicas=1, cpus=0.25, gpus=1))


def test_a_served_judge_answers_through_the_rollout_engine_as_in_process(cluster, llama_dir):
    samples = [Sample(prompt="What is 2+2? /think", completion=f"<think>2+2={k}</think><answer>{k}</answer>",
                      ground_truth="4") for k in range(3, 6)] + \
              [Sample(prompt="What is 2+2? /no_think", completion="4", ground_truth="4")]
    options = {"model": str(llama_dir), "max_new_tokens": 6}
    judge = load_reward(engine_backed("consistency_judge", options), **options)  # posttrain's engine-backed judge
    local = []
    for sample in samples:  # a random model rarely writes a score: each sample is a score or a parse failure
        try:
            local.append(judge([sample])[0])
        except ValueError as error:
            local.append(str(error))
    served = Recipe.model_validate({"name": "t", "stages": [{"kind": "rl"}], "reward": {"components": [
        {"spec": "math"}, {"spec": "consistency_judge", "options": options,  # the recipe's syntax
                           "serve": {"replicas": 1, "cpus": 0.25, "batch_size": 4}}]}})
    with training_reward_pool(served) as rewards:
        out = rewards.score(samples)
    for expected, result in zip(local, out.results, strict=True):
        assert result.components["math"] == float(result is out.results[1] or result is out.results[3])
        if isinstance(expected, str):
            assert result.error == "exception" and expected in result.message
        else:
            assert result.error is None and result.components.get("consistency_judge") == expected
    assert "consistency_judge" not in out.results[3].components  # no reasoning: not applicable
    assert out.metrics["reward_server/consistency_judge/batches"] == 1


def test_a_bad_serve_key_is_refused_naming_it(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: t\nstages: [{kind: rl}]\nreward:\n  components:\n    - {spec: math}\n"
                    "    - {spec: reward_model, options: {model: m}, serve: {replica: 2, dispatch: least_loaded}}\n")
    with pytest.raises(RecipeError, match=r"r.yaml:6: reward.components.1.serve.replica: unknown key 'replica'; "
                                          r"did you mean 'replicas'\?"):
        load_recipe(path, check_environment=False)
    path.write_text(path.read_text().replace("replica: 2, dispatch: least_loaded", "dispatch: round_robin"))
    with pytest.raises(RecipeError, match=r"serve.dispatch: 'round_robin' is not one of \['random', 'least_loaded'\]"):
        load_recipe(path, check_environment=False)

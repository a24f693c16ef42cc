"""Placement on a real Ray cluster with logical GPUs: `ray.init(num_gpus=8)` on a CPU box makes Ray assign GPU ids
and CUDA_VISIBLE_DEVICES to the actors that reserve them, so the learner and rollout actors' own view is checked."""

import importlib.util

import pytest
import ray

from posttrain.learners.learner_config import LearnerConfig
from posttrain.learners.learner_group import LearnerGroup, launch_actors
from posttrain.placement import Bundle, Plan, PlacementError, live_nodes, make_plan, reserve
from posttrain.recipe_checks import load_recipe
from rollout.group import RolloutGroup

pytestmark = pytest.mark.slow  # a Ray cluster and tiny-model rollout workers: ~20 s for the module

BASE = ["cluster.gpus_per_node=8", "cluster.num_cpus=2", "cluster.cpus_per_learner=0.25", "cluster.num_learners=2",
        "rollout.engine=vllm", "rollout.num_workers=2", "rollout.cpus_per_worker=0.25", "reward.cpus_per_worker=0.25"]


@pytest.fixture(scope="module")
def cluster_gpus():
    """The conftest `cluster` gets 8 logical GPUs here."""
    return 8


def recipe(tmp_path, *overrides):
    path = tmp_path / "recipe.yaml"
    path.write_text("name: t\nstages:\n  - kind: rl\n")
    return load_recipe(path, BASE + list(overrides), check_environment=False)


def actor_devices(placement, model_dir):
    """The GPU ids each learner and rollout actor sees from inside (learners are not yet in a process group)."""
    learners = launch_actors(placement.actor_options("learner"), num_threads=1)
    rollout = RolloutGroup(str(model_dir), 2, threads=1, actor_options=placement.actor_options("rollout"))
    try:
        return ray.get([a.devices.remote() for a in learners]), rollout.devices()
    finally:
        rollout.shutdown()
        for actor in learners:
            ray.kill(actor)


def ids(devices):
    for d in devices:  # Ray's assignment and CUDA's view agree: the actor's first GPU is its cuda:0
        assert d["cuda_visible_devices"] == ",".join(d["gpu_ids"]) and d["node"] == ray.nodes()[0]["NodeID"]
    return [tuple(d["gpu_ids"]) for d in devices]


def test_disaggregated_actors_each_see_their_own_gpu(cluster, tmp_path, tiny_model_dir):
    plan = make_plan(recipe(tmp_path, "cluster.gpus_per_learner=1", "rollout.gpus_per_worker=1"), live_nodes())
    placement = reserve(plan, timeout_s=60)
    try:
        learners, rollout = actor_devices(placement, tiny_model_dir)
    finally:
        placement.remove()
    seen = ids(learners) + ids(rollout)
    assert all(len(g) == 1 for g in seen) and len(set(seen)) == 4  # four actors, four different GPUs


def test_colocated_learner_and_engine_share_a_gpu_and_pairs_do_not(cluster, tmp_path, tiny_model_dir):
    plan = make_plan(recipe(tmp_path, "cluster.placement=colocated", "cluster.gpus_per_learner=0.5",
                            "rollout.gpus_per_worker=0.4"), live_nodes())
    placement = reserve(plan, timeout_s=60)
    try:
        learners, rollout = actor_devices(placement, tiny_model_dir)
    finally:
        placement.remove()
    learner_ids, rollout_ids = ids(learners), ids(rollout)
    assert learner_ids == rollout_ids and len(set(learner_ids)) == 2 and all(len(g) == 1 for g in learner_ids)


def test_an_actor_that_reserves_no_gpu_sees_none(cluster):
    (actor,) = launch_actors([{"num_cpus": 0.25, "num_gpus": 0}], num_threads=1)
    try:
        devices = ray.get(actor.devices.remote())
    finally:
        ray.kill(actor)
    assert devices["gpu_ids"] == [] and devices["cuda_visible_devices"] == ""  # Ray itself would leave it unset


def test_a_learner_on_a_gpu_without_cuda_fails_clearly_and_frees_the_gpu(cluster, tiny_model_dir):
    config = LearnerConfig(model=str(tiny_model_dir))
    with pytest.raises(ray.exceptions.RayTaskError, match="reserved GPU .* but torch .* has no CUDA"):
        LearnerGroup(config, actor_options=[{"num_cpus": 0.25, "num_gpus": 1}])
    # the killed actor's GPU returns to the pool (asynchronously)
    ray.get(ray.remote(num_gpus=8, num_cpus=0)(lambda: None).remote(), timeout=60)


def test_rollout_group_builds_the_engine_the_recipe_names(cluster, tmp_path, tiny_model_dir):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here: the missing-engine path cannot be shown")
    from rich.console import Console

    from posttrain.stages.context import StageContext
    from posttrain.stages.common import rollout_group

    r = recipe(tmp_path, "rollout.num_workers=1")
    ctx = StageContext(r, 0, r.stages[0], tmp_path, tiny_model_dir, tmp_path, Console())
    with pytest.raises(ray.exceptions.RayActorError, match="No module named 'vllm'"):
        rollout_group(ctx)  # vllm asked for: the worker fails, it does not generate with transformers


def test_plan_checks_the_connected_clusters_resources(cluster, capsys):
    from posttrain.cli import main
    from posttrain.commands.recipes import RECIPES_DIR

    assert main(["plan", str(RECIPES_DIR / "keye-8b" / "rl.yaml")]) == 2
    err = capsys.readouterr().err
    assert "do not fit the cluster (1 node x (8 GPUs, 2 CPUs))" in err and "`--declared`" in err


def test_bundles_the_cluster_cannot_grant_time_out_with_a_clear_error(cluster):
    nodes = live_nodes()
    plan = Plan("disaggregated", nodes, bundles=[Bundle(0, 0, 0.25, 16, tuple(range(16)))])
    with pytest.raises(PlacementError, match=r"did not grant the placement's 1 bundles within "
                                             r"cluster.placement_timeout_s \(1 s\)"):
        reserve(plan, timeout_s=1)

"""A run on several nodes checks, before any actor starts, that every node sees its run directory."""

import pytest
import ray
from ray.cluster_utils import Cluster

from posttrain import cluster as cluster_module
from posttrain.cluster import check_shared_run_dir
from posttrain.recipe import Recipe


@pytest.fixture()
def two_nodes():
    assert not ray.is_initialized()
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes.add_node(num_cpus=1)
    ray.init(address=nodes.address)
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def test_a_run_directory_every_node_sees_passes_and_one_a_node_cannot_see_stops_the_run(two_nodes, tmp_path,
                                                                                        monkeypatch):
    run_dir = tmp_path / "runs" / "r"
    check_shared_run_dir(run_dir)  # one machine: both nodes share its filesystem
    assert run_dir.is_dir() and not list(run_dir.iterdir())  # the probe is gone

    @ray.remote(num_cpus=0)
    def blind(path, token):  # a node with its own disk: the driver's file is not there
        return False

    monkeypatch.setattr(cluster_module, "_reads", blind)
    with pytest.raises(RuntimeError, match=rf"1 of 2 nodes cannot see the run directory {run_dir} .*Put runs_dir "
                                           rf"on a filesystem every node mounts at the same path"):
        check_shared_run_dir(run_dir)


def test_the_run_directory_is_absolute_whatever_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = Recipe.model_validate({"name": "r", "stages": [{"kind": "rl"}]})  # runs_dir: runs (relative)
    assert recipe.run_dir == tmp_path / "runs" / "r" and recipe.stage_dirs()[0].is_absolute()


def test_a_local_run_starts_its_own_cluster_even_where_another_is_running(tmp_path):
    from posttrain.cluster import ray_cluster

    other = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})  # as `ray start` leaves one
    try:
        recipe = Recipe.model_validate({"name": "r", "runs_dir": str(tmp_path), "cluster": {"num_cpus": 3},
                                        "stages": [{"kind": "rl"}]})
        with ray_cluster(recipe):  # ray.init() alone would join `other` and refuse num_cpus
            assert ray.cluster_resources()["CPU"] == 3
    finally:
        other.shutdown()

"""Weight sync across two Ray nodes, simulated on this machine (`ray.cluster_utils.Cluster`, both on loopback): two
ZeRO-3 learner ranks on node 1, a rollout worker on node 2, placed by custom resources. After a train step the
worker's probe logprobs must equal the learner's, through the broadcast group (gloo: no GPUs here) and through the
object store streamed one bucket per object."""

import pytest
import ray
import ray._private.ray_constants as ray_constants
import torch
from ray.cluster_utils import Cluster

from posttrain.learners.batch import TrainBatch
from posttrain.learners.learner_config import LearnerConfig
from posttrain.learners.learner_group import LearnerGroup
from posttrain.recipe import RecipeError, RolloutSection
from posttrain.stages.rl import weight_sync
from posttrain.stages.rl.weight_sync import BroadcastSync, ObjectStoreSync, open_weight_sync
from rollout.group import RolloutGroup
from rollout.weight_sync import WeightSyncError, verify

pytestmark = pytest.mark.slow  # two Ray nodes, two DeepSpeed ranks and a worker: ~40 s on 2 cores


@pytest.fixture(scope="module")
def two_nodes():
    """Node 1 (the head) takes the learners, node 2 the rollout worker: each node offers a resource only its role
    asks for. Both listen on loopback only."""
    assert not ray.is_initialized()
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"learner_node": 2},
                                                           "node_ip_address": "127.0.0.1", "include_dashboard": False})
    nodes.add_node(num_cpus=1, resources={"rollout_node": 1}, node_ip_address="127.0.0.1")
    with pytest.MonkeyPatch.context() as patch:
        # ray.init turns a loopback address into the host's routable IP, where these nodes do not listen, unless
        # Ray believes it runs without clusters (its own rule for macOS and Windows)
        patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        ray.init(address=nodes.address, log_to_driver=False)
        try:
            yield nodes
        finally:
            ray.shutdown()
            nodes.shutdown()


@pytest.fixture(scope="module")
def actors(two_nodes, llama_dir):
    config = LearnerConfig(model=str(llama_dir), zero_stage=3, lr=5e-2, precision="fp32")
    learners = LearnerGroup(config, world_size=2, num_threads=1,
                            actor_options=[{"num_cpus": 1, "resources": {"learner_node": 1}}] * 2)
    try:
        rollout = RolloutGroup(str(llama_dir), 1, threads=1, engine="transformers",
                               actor_options=[{"num_cpus": 1, "resources": {"rollout_node": 1}}])
    except BaseException:
        learners.shutdown()
        raise
    yield learners, rollout
    rollout.shutdown()
    learners.shutdown()


def token_batch(rows: int, length: int, seed: int, vocab: int = 600) -> TrainBatch:
    ids = torch.randint(1, vocab, (rows, length), generator=torch.Generator().manual_seed(seed))
    loss_mask = torch.ones_like(ids)
    loss_mask[:, :3] = 0
    return TrainBatch(input_ids=ids, attention_mask=torch.ones_like(ids), loss_mask=loss_mask)


PROBE = token_batch(2, 16, seed=99)  # two rows: one per learner rank


def learner_probe(learners: LearnerGroup) -> torch.Tensor:
    return learners.forward_logprobs(PROBE)[0, 1:]


def worker_probe(rollout: RolloutGroup) -> torch.Tensor:
    return ray.get(rollout.workers[0].probe_logprobs.remote(PROBE.input_ids[0].tolist()))


def train_and_sync(learners, rollout, sync, version: int, seed: int) -> None:
    """A train step that moves the weights (the worker is now behind), then the sync under test."""
    learners.train_step(token_batch(4, 12, seed))
    with pytest.raises(WeightSyncError, match="differ from the learner"):
        verify(worker_probe(rollout), learner_probe(learners), version)
    sync.deliver(version, sync.publish(version))


def test_the_actors_run_on_two_nodes(actors):
    learners, rollout = actors
    learner_nodes = {d["node"] for d in learners.devices()}
    assert len(learner_nodes) == 1 and rollout.devices()[0]["node"] not in learner_nodes


def test_broadcast_across_nodes_gives_the_worker_the_learners_weights(actors, monkeypatch):
    learners, rollout = actors
    monkeypatch.setattr(weight_sync, "BUCKET_BYTES", 64 << 10)  # several buckets, each its own collective
    said = []
    sync = open_weight_sync(RolloutSection(weight_sync="broadcast"), learners, rollout, said.append)
    assert isinstance(sync, BroadcastSync) and len(sync.plan) > 1
    assert said == [f"weight sync through broadcast (gloo at {sync.address}, torch.float32)"]
    assert sync.address.startswith("127.0.0.1:")  # learner rank 0's node IP: loopback on a one-host cluster
    for version in (1, 2):
        train_and_sync(learners, rollout, sync, version, seed=version)
        verify(worker_probe(rollout), learner_probe(learners), version)
    assert rollout.weight_versions() == [2]


def test_the_object_store_streams_one_bucket_per_object_across_nodes(actors, monkeypatch):
    learners, rollout = actors
    monkeypatch.setattr(weight_sync, "BUCKET_BYTES", 64 << 10)
    sync = open_weight_sync(RolloutSection(weight_sync="object_store"), learners, rollout, lambda line: None)
    assert isinstance(sync, ObjectStoreSync)
    learners.train_step(token_batch(4, 12, seed=3))
    refs = sync.publish(3)
    assert len(refs) > 1 and all(isinstance(ref, ray.ObjectRef) for ref in refs)
    sync.deliver(3, refs)
    verify(worker_probe(rollout), learner_probe(learners), 3)
    assert rollout.weight_versions() == [3]


def test_shared_memory_with_the_worker_on_another_node_is_refused(actors):
    learners, rollout = actors
    with pytest.raises(RecipeError, match="rollout.weight_sync: shared_memory needs every rollout worker on "
                                          "learner rank 0's node"):
        open_weight_sync(RolloutSection(weight_sync="shared_memory"), learners, rollout, lambda line: None)

"""Rollout workers as real Ray actors on a loopback cluster (a worker killed mid-batch: tests/reliability)."""

import pytest
import ray
import torch

from rollout.group import RolloutGroup, shard
from rollout.shared_weights import SharedWeightsLayout, write_slot
from rollout.types import GenerationRequest, SamplingParams
from rollout.weight_sync import bucket_tensors
from rollout.worker import RolloutWorker

pytestmark = pytest.mark.slow

REQUESTS = [GenerationRequest(f"q{i}", [{"role": "user", "content": f"What is {i} + {i}?"}], "think")
            for i in range(6)]
GREEDY = SamplingParams(temperature=0, max_tokens=8)


@pytest.fixture(scope="module")
def group(cluster, tiny_model_dir):
    group = RolloutGroup(str(tiny_model_dir), num_workers=2, cpus_per_worker=0.5)
    yield group
    group.shutdown()


def test_shard_keeps_order():
    assert shard(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert shard([1], 2) == [[1], []]


def test_group_output_equals_one_engine(group, engine):
    completions = group.generate(REQUESTS, GREEDY)
    expected = engine.generate(REQUESTS, GREEDY)
    assert [c.token_ids for c in completions] == [c.token_ids for c in expected]
    assert {c.worker for c in completions} == {"rollout-0", "rollout-1"}


def test_a_seeded_call_repeats_and_gives_each_shard_its_own_seed(group, engine):
    sampling = SamplingParams(n=2, temperature=1.0, top_p=1.0, top_k=0, max_tokens=8, seed=11)
    first = group.generate(REQUESTS, sampling)
    assert [c.token_ids for c in group.generate(REQUESTS, sampling)] == [c.token_ids for c in first]
    shards = shard(REQUESTS, 2)
    expected = [c for i, requests in enumerate(shards)
                for c in engine.generate(requests, sampling.model_copy(update={"seed": 11 + i}))]
    assert [c.token_ids for c in first] == [c.token_ids for c in expected]


def test_weight_update_reaches_every_worker_and_is_recorded(group, tiny_model, engine):
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    group.update_weights(3, bucket_tensors(tiny_model.named_parameters(), bucket_bytes=1 << 20))
    assert group.weight_versions() == [3, 3]
    engine.load_weights(3, dict(tiny_model.named_parameters()))
    completions = group.generate(REQUESTS, GREEDY)
    assert all(c.weight_version == 3 for c in completions)
    assert [c.token_ids for c in completions] == [c.token_ids for c in engine.generate(REQUESTS, GREEDY)]


def test_one_ref_per_bucket_reaches_every_worker(group, tiny_model, engine):
    """What `LearnerGroup.export_weight_refs` hands over: the learner's objects, never fetched by the driver."""
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.mul_(0.9)
    refs = [ray.put(b) for b in bucket_tensors(tiny_model.named_parameters(), bucket_bytes=1 << 16)]
    assert len(refs) > 1
    group.update_weights(5, refs)
    assert group.weight_versions() == [5, 5]
    engine.load_weights(5, dict(tiny_model.named_parameters()))
    assert [c.token_ids for c in group.generate(REQUESTS, GREEDY)] == \
        [c.token_ids for c in engine.generate(REQUESTS, GREEDY)]


def test_a_worker_fetches_each_bucket_only_once_it_loaded_the_one_before(cluster, tiny_model_dir, tiny_model,
                                                                        monkeypatch):
    """The object store path streams: a worker holds one bucket at a time, never the whole model."""
    worker = RolloutWorker(tiny_model_dir, engine="transformers")
    buckets = bucket_tensors(tiny_model.named_parameters(), bucket_bytes=1 << 16)
    refs = [ray.put(b) for b in buckets]
    events, real_get, real_load = [], ray.get, worker.engine.load_weights

    def get(ref, **kwargs):
        events.append(("get", refs.index(ref)))
        return real_get(ref, **kwargs)

    def load(version, bucket):
        events.append(("load", sorted(bucket)))
        return real_load(version, bucket)

    monkeypatch.setattr(ray, "get", get)
    monkeypatch.setattr(worker.engine, "load_weights", load)
    assert worker.update_weights(4, refs) == len(list(tiny_model.parameters()))
    assert events == [e for i, b in enumerate(buckets) for e in (("get", i), ("load", sorted(b)))]
    assert worker.weight_version() == 4


def test_shared_weights_reach_every_worker_as_views_of_one_file(group, tiny_model, engine, tmp_path):
    """Same host: the learner writes the slot once; each worker points its engine at it (`rollout.shared_weights`)."""
    weights = {n: p.detach() * 1.1 for n, p in tiny_model.named_parameters()}
    layout = SharedWeightsLayout.plan(tmp_path / "weights", [(n, t.shape, t.dtype) for n, t in weights.items()])
    write_slot(layout.create(), 9, weights.items())
    group.share_weights(9, layout)
    assert group.weight_versions() == [9, 9]
    engine.load_weights(9, weights)
    assert [c.token_ids for c in group.generate(REQUESTS, GREEDY)] == \
        [c.token_ids for c in engine.generate(REQUESTS, GREEDY)]

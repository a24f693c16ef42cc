"""A rollout worker (Ray actor) killed mid-batch: the group restarts it, gives it the latest weights back and redoes
its share of the batch. Moved here from tests/rollout/test_group.py, whose earlier test left the weights at
version 3; the fixture below sets that version itself."""

import threading
import time

import pytest
import ray

from rollout.group import RolloutGroup
from rollout.shared_weights import SharedWeightsLayout, write_slot
from rollout.types import GenerationRequest, SamplingParams
from rollout.weight_sync import bucket_tensors

pytestmark = pytest.mark.slow

REQUESTS = [GenerationRequest(f"q{i}", [{"role": "user", "content": f"What is {i} + {i}?"}], "think")
            for i in range(6)]


@pytest.fixture(scope="module")
def group(cluster, tiny_model_dir):
    from keye_vl.modeling import KeyeForConditionalGeneration

    group = RolloutGroup(str(tiny_model_dir), num_workers=2, cpus_per_worker=0.5)
    model = KeyeForConditionalGeneration.from_pretrained(tiny_model_dir)
    group.update_weights(3, bucket_tensors(model.named_parameters(), bucket_bytes=1 << 20))
    yield group
    group.shutdown()


def test_a_worker_killed_mid_batch_is_restarted_and_the_batch_redone(group):
    slow = SamplingParams(temperature=1.0, max_tokens=400, seed=0)
    killer = threading.Timer(1.0, lambda: ray.kill(group.workers[1], no_restart=False))
    killer.start()
    started = time.monotonic()
    completions = group.generate(REQUESTS * 4, slow)
    killer.join()
    assert len(completions) == 24 and all(c.finish_reason in ("stop", "length") for c in completions)
    assert group.redispatched >= 1, f"kill did not land during the batch ({time.monotonic() - started:.1f}s)"
    assert group.weight_versions() == [3, 3]  # the restarted actor got the latest weights back


def test_a_worker_killed_during_a_weight_update_gets_the_weights_once_restarted(group, tiny_model_dir):
    """The RL step's weight sync used to raise the dead worker's RayActorError and end the run."""
    from keye_vl.modeling import KeyeForConditionalGeneration

    buckets = bucket_tensors(KeyeForConditionalGeneration.from_pretrained(tiny_model_dir).named_parameters(),
                             bucket_bytes=1 << 20)
    before = group.redispatched
    for version in (11, 12, 13):
        ray.kill(group.workers[0], no_restart=False)  # the update below reaches the dying actor or its restart
        group.update_weights(version, buckets)
        assert group.weight_versions() == [version, version]
    print("updates that met a dead worker:", group.redispatched - before)


def test_a_worker_restarted_after_a_shared_memory_sync_views_that_slot_again(group, tiny_model_dir, tmp_path):
    from keye_vl.modeling import KeyeForConditionalGeneration

    named = list(KeyeForConditionalGeneration.from_pretrained(tiny_model_dir).named_parameters())
    layout = SharedWeightsLayout.plan(tmp_path / "weights", [(n, p.shape, p.dtype) for n, p in named]).create()
    write_slot(layout, 21, named)
    group.share_weights(21, layout)
    ray.kill(group.workers[0], no_restart=False)
    completions = group.generate(REQUESTS, SamplingParams(temperature=0, max_tokens=4))
    assert {c.weight_version for c in completions} == {21}
    assert group.weight_versions() == [21, 21]

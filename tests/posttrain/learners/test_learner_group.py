"""Two Ray actors in one gloo process group: ranks stay identical and match one rank with doubled accumulation,
with the rows balanced across ranks by FLOPs."""

from pathlib import Path

import pytest
import torch

from posttrain.learners.batch import TrainBatch
from posttrain.learners.learner import Learner
from posttrain.learners.learner_config import LearnerConfig
from posttrain.learners.learner_group import LearnerGroup
from runtime.local_ray import local_ray


@pytest.mark.slow
def test_two_ranks_match_one_rank_with_doubled_accumulation(qwen_dir, make_batch):
    # rows sorted longest first: a contiguous split would give rank 0 the long ones, so balancing must reorder
    batches = [longest_first(make_batch(8, 12, seed=s)) for s in range(3)]
    common = dict(model=qwen_dir, lr=1e-2, precision="fp32", zero_stage=2, micro_batching="bucket")
    with local_ray(num_cpus=2):
        with LearnerGroup(LearnerConfig(**common, grad_accum_steps=1), world_size=2, cpus_per_rank=1) as group:
            metrics = [group.train_step(b) for b in batches]
            group_losses = [m["loss"] for m in metrics]
            rank0, rank1 = group.local_parameters()
            group_logprobs = group.forward_logprobs(batches[0])
            exported = {k: v for b in group.export_weights(bucket_bytes=4096) for k, v in b.items()}
    single = Learner(LearnerConfig(**common, grad_accum_steps=2))
    single_losses = [single.train_step(b)["loss"] for b in batches]

    assert all(torch.equal(rank0[name], rank1[name]) for name in rank0)  # data parallel: identical replicas
    assert group_losses == pytest.approx(single_losses, abs=1e-5)
    for name, param in single.module.named_parameters():
        assert torch.allclose(rank0[name], param, atol=1e-5), name
        assert torch.equal(exported[name], rank0[name])
    assert torch.allclose(group_logprobs, single.forward_logprobs(batches[0]), atol=1e-5)
    assert group_losses[-1] < group_losses[0]
    # ragged rows were reordered across the ranks by FLOPs (the logprobs above came back in the caller's order)
    assert all(m["balance/imbalance_after"] < m["balance/imbalance_before"] for m in metrics)


def longest_first(batch: TrainBatch) -> TrainBatch:
    return batch.select(torch.argsort(batch.spans()[1], descending=True, stable=True))


def test_shards_keep_groups_whole(make_batch):
    batch = make_batch(4, 8).with_fields(group_ids=torch.tensor([0, 0, 1, 1]))
    assert [s.group_ids.tolist() for s in (batch.shard(0, 2), batch.shard(1, 2))] == [[0, 0], [1, 1]]
    with pytest.raises(ValueError, match="straddles learner shards"):
        batch.with_fields(group_ids=torch.tensor([0, 1, 1, 2])).shard(0, 2)
    assert isinstance(TrainBatch.concat([batch.shard(0, 2), batch.shard(1, 2)]), TrainBatch)


@pytest.mark.slow
def test_rank0_removes_its_shared_weights_directory_at_shutdown(qwen_dir, tmp_path):
    """Removed by the rank that made it, on its own host: the driver may run on another node."""
    with local_ray(num_cpus=2):
        with LearnerGroup(LearnerConfig(model=qwen_dir, precision="fp32"), world_size=1, cpus_per_rank=1) as group:
            layout = group.shared_weights_layout(str(tmp_path))
            private = Path(layout.path).parent
            assert private.parent == tmp_path and private.is_dir() and group.write_shared_weights(layout, 1) > 0
    assert not private.exists()

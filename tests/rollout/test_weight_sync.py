import threading

import pytest
import torch

from rollout.weight_sync import (BroadcastGroup, WeightSyncError, bucket_bytes, bucket_tensors, tensor_metas,
                                 verify)


def test_buckets_respect_the_size_limit():
    tensors = [(f"w{i}", torch.zeros(100)) for i in range(10)]  # 400 bytes each
    buckets = bucket_tensors(tensors, bucket_bytes=1000)
    assert [len(b) for b in buckets] == [2, 2, 2, 2, 2]
    assert bucket_bytes(buckets) == 4000
    assert [len(b) for b in bucket_tensors([("big", torch.zeros(1000))] + tensors[:1], 1000)] == [1, 1]


def test_buckets_are_copies():
    weight = torch.ones(3)
    [bucket] = bucket_tensors([("w", weight)])
    weight.add_(1)
    assert bucket["w"].tolist() == [1.0, 1.0, 1.0]


def test_verify_names_the_version():
    assert verify(torch.tensor([-1.0, -2.0]), torch.tensor([-1.0, -2.00001]), version=3) < 1e-4
    with pytest.raises(WeightSyncError, match="version 4"):
        verify(torch.tensor([-1.0]), torch.tensor([-1.5]), version=4)


def test_broadcast_group_moves_every_tensor_and_the_engine_agrees(engine, tiny_model):
    """Rank 0 plays the learner (a differently initialised model), rank 1 the engine (gloo, two threads)."""
    learner = tiny_model
    with torch.no_grad():
        for p in learner.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    named = list(learner.named_parameters())
    metas = tensor_metas(named)
    port = 29500 + (torch.randint(0, 2000, (1,)).item())
    received = {}

    def engine_side():
        group = BroadcastGroup(port, rank=1, world_size=2)
        received["n"] = engine.load_weights(7, group.receive(metas))

    thread = threading.Thread(target=engine_side)
    thread.start()
    sent = BroadcastGroup(port, rank=0, world_size=2).send(named)
    thread.join(timeout=60)
    probe = engine.encoder.text_ids("<|im_start|>user\nWhat is 1 + 1?<|im_end|>")
    with torch.no_grad():
        ids = torch.tensor([probe])
        expected = torch.log_softmax(learner(input_ids=ids).logits[0, :-1], -1).gather(1, ids[0, 1:, None])[:, 0]
    assert received["n"] == len(named) and sent == sum(p.numel() * 4 for _, p in named)
    assert engine.weight_version == 7
    verify(engine.probe_logprobs(probe), expected, version=7)

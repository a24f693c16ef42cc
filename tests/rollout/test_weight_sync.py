import threading

import pytest
import torch

from rollout.weight_sync import (BroadcastGroup, WeightSyncError, bucket_bytes, bucket_tensors, offsets,
                                 tensor_metas, verify)


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


def free_port() -> int:
    from posttrain.learners.engine_setup import free_port

    return free_port()


def in_thread(fn):
    """Run fn in a thread (the receiving rank); returns a join() that gives its result or raises its error."""
    out = {}

    def run():
        try:
            out["result"] = fn()
        except BaseException as error:  # re-raised in the test's thread
            out["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join():
        thread.join(timeout=60)
        if "error" in out:
            raise out["error"]
        return out["result"]
    return join


def test_a_bucket_of_mixed_dtypes_crosses_as_one_buffer_and_arrives_as_sent():
    """Offsets are aligned so that each tensor's bytes can be viewed as its dtype again (bf16 after 3 bytes)."""
    bucket = [("a", torch.arange(3, dtype=torch.uint8)), ("b", torch.randn(2, 3).to(torch.bfloat16)),
              ("c", torch.randn(5)), ("d", torch.randn(4, 2).t())]  # d: not contiguous
    starts, size = offsets(tensor_metas(bucket))
    assert starts == [0, 16, 32, 64] and size == 96
    port = free_port()
    join = in_thread(lambda: BroadcastGroup("127.0.0.1", port, 1, 2).receive_bucket(tensor_metas(bucket)))
    sent = BroadcastGroup("127.0.0.1", port, 0, 2).send_bucket(bucket)
    received = join()
    assert sent == 3 + 12 + 20 + 32
    assert [n for n, _ in received] == ["a", "b", "c", "d"]
    assert all(torch.equal(r, t) and r.dtype == t.dtype for (_, r), (_, t) in zip(received, bucket))


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="'nccl' or 'gloo', not 'mpi'"):
        BroadcastGroup("127.0.0.1", free_port(), 0, 1, backend="mpi")


def test_broadcast_group_moves_every_bucket_and_the_engine_agrees(engine, tiny_model):
    """Rank 0 plays the learner (a differently initialised model), rank 1 the engine (gloo, two threads); the engine
    loads each bucket as it arrives."""
    learner = tiny_model
    with torch.no_grad():
        for p in learner.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    named = list(learner.named_parameters())
    plan = [tensor_metas(named[:3]), tensor_metas(named[3:])]
    port = free_port()

    def engine_side():
        group = BroadcastGroup("127.0.0.1", port, rank=1, world_size=2)
        return sum(engine.load_weights(7, group.receive_bucket(bucket)) for bucket in plan)

    join = in_thread(engine_side)
    sender = BroadcastGroup("127.0.0.1", port, rank=0, world_size=2)
    sent = sender.send_bucket(named[:3]) + sender.send_bucket(named[3:])
    assert join() == len(named) and sent == sum(p.numel() * 4 for _, p in named)
    probe = engine.encoder.text_ids("<|im_start|>user\nWhat is 1 + 1?<|im_end|>")
    with torch.no_grad():
        ids = torch.tensor([probe])
        expected = torch.log_softmax(learner(input_ids=ids).logits[0, :-1], -1).gather(1, ids[0, 1:, None])[:, 0]
    assert engine.weight_version == 7
    verify(engine.probe_logprobs(probe), expected, version=7)

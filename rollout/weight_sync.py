"""Moving weights from the learners to the rollout engines, with a version on every update.

Two transports here, one contract (`engine.load_weights(version, named_tensors)`, called once per bucket):
- buckets: {name: tensor} dicts of about `bucket_bytes` each, which on CPU travel through Ray's object store
  (the learner puts each bucket as its own object; a worker gets and loads one at a time);
- broadcast: a process group of its own (learner rank 0 + every rollout worker), built from a TCP store at
  learner rank 0's node address, so it never touches the learners' training group; NCCL on GPU, gloo on CPU
  (which is how it is tested here). The plan (each bucket's names, shapes and dtypes) reaches the receivers
  first; then each bucket crosses as one flat byte buffer (one collective per bucket, not per tensor) that the
  receivers view as its tensors, so no side ever holds more than one bucket of the model.
(The third transport, shared memory on the learner's host, is `rollout.shared_weights`.)

Knows nothing of learners, Ray or recipes: who joins which rank, and when, is the caller's.
After a sync, `verify` compares the engine's logprobs on a probe prompt with the learner's.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist

DEFAULT_BUCKET_BYTES = 64 * 1024 * 1024
ALIGN = 16  # each tensor starts on a 16-byte boundary of a bucket's buffer: viewing bytes as a dtype needs it


def bucket_tensors(named_tensors: Iterable[tuple[str, torch.Tensor]],
                   bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> list[dict[str, torch.Tensor]]:
    """Group detached CPU copies into buckets of at most `bucket_bytes` (a larger tensor gets its own)."""
    buckets, current, size = [], {}, 0
    for name, tensor in named_tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > bucket_bytes:
            buckets.append(current)
            current, size = {}, 0
        current[name] = tensor.detach().to("cpu", copy=True)
        size += nbytes
    if current:
        buckets.append(current)
    return buckets


def bucket_bytes(buckets: list[dict[str, torch.Tensor]]) -> int:
    return sum(t.numel() * t.element_size() for bucket in buckets for t in bucket.values())


class WeightSyncError(RuntimeError):
    pass


def verify(engine_logprobs: torch.Tensor, learner_logprobs: torch.Tensor, version: int, tol: float = 1e-4) -> float:
    """Max |difference| of probe logprobs; raises if the engine did not get the learner's weights."""
    diff = float((engine_logprobs.float() - learner_logprobs.float()).abs().max())
    if diff > tol:
        raise WeightSyncError(f"after weight sync to version {version} the engine's probe logprobs differ from "
                              f"the learner's by {diff:.2e} (> {tol:.0e}): the update did not take effect")
    return diff


@dataclass(frozen=True)
class TensorMeta:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        numel = 1
        for size in self.shape:
            numel *= size
        return numel * torch.empty(0, dtype=self.dtype).element_size()


Plan = list[list[TensorMeta]]  # the buckets of one sync, in the order the sender sends them


def tensor_metas(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> list[TensorMeta]:
    return [TensorMeta(name, tuple(t.shape), t.dtype) for name, t in named_tensors]


def offsets(metas: list[TensorMeta]) -> tuple[list[int], int]:
    """Each tensor's byte offset in its bucket's buffer, and the buffer's size (both sides compute the same)."""
    starts, end = [], 0
    for meta in metas:
        start = -(-end // ALIGN) * ALIGN
        starts.append(start)
        end = start + meta.nbytes
    return starts, end


class BroadcastGroup:
    """A standalone process group for weight broadcast: rank 0 is the learner, 1..N the rollout workers.

    `host` is rank 0's node address (where its TCP store listens): every member must reach it, so it is a
    routable IP on a multi-node cluster and 127.0.0.1 only when everything runs on one host."""

    def __init__(self, host: str, port: int, rank: int, world_size: int, backend: str = "gloo",
                 timeout_s: float = 300.0):
        timeout = datetime.timedelta(seconds=timeout_s)
        store = dist.TCPStore(host, port, world_size, is_master=rank == 0, timeout=timeout)
        if backend == "nccl":
            self.group = dist.ProcessGroupNCCL(store, rank, world_size)
            self.device = torch.device("cuda", torch.cuda.current_device())
        elif backend == "gloo":
            self.group = dist.ProcessGroupGloo(store, rank, world_size, timeout)
            self.device = torch.device("cpu")
        else:
            raise ValueError(f"weight broadcast backend must be 'nccl' or 'gloo', not {backend!r}")
        self.rank = rank

    def _broadcast(self, tensor: torch.Tensor) -> None:
        options = dist.BroadcastOptions()
        options.rootRank = 0
        self.group.broadcast([tensor], options).wait()

    def send_bucket(self, named_tensors: list[tuple[str, torch.Tensor]]) -> int:
        """Rank 0: one bucket as one buffer, laid out as the receivers' plan says (the same names, shapes and
        dtypes, in this order). Returns the bytes of tensor data sent."""
        starts, size = offsets(tensor_metas(named_tensors))
        buffer = torch.zeros(size, dtype=torch.uint8, device=self.device)
        for start, (_, tensor) in zip(starts, named_tensors):
            flat = tensor.detach().reshape(-1).view(torch.uint8)
            buffer[start:start + flat.numel()].copy_(flat)
        self._broadcast(buffer)
        return sum(t.numel() * t.element_size() for _, t in named_tensors)

    def receive_bucket(self, metas: list[TensorMeta]) -> list[tuple[str, torch.Tensor]]:
        """Ranks 1..N: one bucket, as views of the buffer it arrived in (the engine copies them in)."""
        starts, size = offsets(metas)
        buffer = torch.empty(size, dtype=torch.uint8, device=self.device)
        self._broadcast(buffer)
        return [(m.name, buffer[s:s + m.nbytes].view(m.dtype).view(m.shape)) for s, m in zip(starts, metas)]

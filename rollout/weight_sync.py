"""Moving weights from the learners to the rollout engines, with a version on every update.

Two transports, one contract (`engine.load_weights(version, named_tensors)`):
- buckets: lists of {name: tensor} dicts of about `bucket_bytes` each, which on CPU travel through Ray's
  object store (the learner puts them, each worker gets them);
- broadcast: a process group of its own (learner rank 0 + every rollout worker), built from a TCP store on
  loopback, so it never touches the learners' training group; NCCL on GPU, gloo on CPU (which is how it is
  tested here). Metadata (names, shapes, dtypes) goes first; tensors follow one by one.

After a sync, `verify` compares the engine's logprobs on a probe prompt with the learner's.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist

DEFAULT_BUCKET_BYTES = 64 * 1024 * 1024


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


@dataclass
class TensorMeta:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


class BroadcastGroup:
    """A standalone process group for weight broadcast: rank 0 is the learner, 1..N the rollout workers."""

    def __init__(self, port: int, rank: int, world_size: int, backend: str = "gloo", host: str = "127.0.0.1",
                 timeout_s: float = 300.0):
        timeout = datetime.timedelta(seconds=timeout_s)
        store = dist.TCPStore(host, port, world_size, is_master=rank == 0, timeout=timeout)
        if backend == "nccl":
            self.group = dist.ProcessGroupNCCL(store, rank, world_size)
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            self.group = dist.ProcessGroupGloo(store, rank, world_size, timeout)
            self.device = torch.device("cpu")
        self.rank = rank

    def _broadcast(self, tensor: torch.Tensor) -> None:
        options = dist.BroadcastOptions()
        options.rootRank = 0
        self.group.broadcast([tensor], options).wait()

    def send(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Rank 0: broadcast every tensor (in the order of the metadata the receivers were given)."""
        sent = 0
        for _, tensor in named_tensors:
            self._broadcast(tensor.detach().to(self.device).contiguous())
            sent += tensor.numel() * tensor.element_size()
        return sent

    def receive(self, metas: list[TensorMeta]) -> Iterable[tuple[str, torch.Tensor]]:
        """Ranks 1..N: yield (name, tensor) as each arrives, so the engine can load without holding them all."""
        for meta in metas:
            buffer = torch.empty(meta.shape, dtype=meta.dtype, device=self.device)
            self._broadcast(buffer)
            yield meta.name, buffer


def tensor_metas(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> list[TensorMeta]:
    return [TensorMeta(name, tuple(t.shape), t.dtype) for name, t in named_tensors]

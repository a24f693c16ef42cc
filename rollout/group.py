"""A group of rollout workers as Ray actors: shard a batch, gather completions, survive a dead worker.

Actors are started with `max_restarts=-1`. When one dies mid-batch its shard fails with `RayActorError`; the
group waits until Ray has restarted it, gives it the latest weights again (a restarted actor starts from the
model directory) and dispatches the same shard once more. Weights travel as bucket ObjectRefs: one `ray.put`
per bucket, shared by every worker.

Ray itself (cluster start, placement) belongs to the caller; this module only creates actors on it.
"""

from __future__ import annotations

import time
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from rollout.types import Completion, GenerationRequest, SamplingParams
from rollout.worker import RolloutWorker

RECOVERABLE = (RayActorError, ActorDiedError, ActorUnavailableError)


class RolloutGroup:
    def __init__(self, model_dir: str, num_workers: int = 1, cpus_per_worker: float = 1.0,
                 max_redispatch: int = 2, threads: int | None = None, **worker_kwargs: Any):
        actor = ray.remote(RolloutWorker).options(num_cpus=cpus_per_worker, max_restarts=-1, max_task_retries=0)
        threads = threads or max(1, int(cpus_per_worker))
        self.workers = [actor.remote(model_dir, worker_id=f"rollout-{i}", num_threads=threads, **worker_kwargs)
                        for i in range(num_workers)]
        self.max_redispatch = max_redispatch
        self.version = 0
        self.bucket_refs: list[ray.ObjectRef] = []
        self.redispatched = 0
        ray.get([w.ping.remote() for w in self.workers])

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        """Completions in request order (n per request), from contiguous shards across the workers."""
        shards = shard(requests, len(self.workers))
        futures = {i: self.workers[i].generate.remote(s, sampling) for i, s in enumerate(shards) if s}
        results = {}
        for i, future in futures.items():
            results[i] = self._get_or_redo(i, future, shards[i], sampling)
        return [c for i in sorted(results) for c in results[i]]

    def _get_or_redo(self, i: int, future, requests, sampling) -> list[Completion]:
        for attempt in range(self.max_redispatch + 1):
            try:
                return ray.get(future)
            except RECOVERABLE:
                if attempt == self.max_redispatch:
                    raise
                self.redispatched += 1
                self._wait_restarted(i)
                future = self.workers[i].generate.remote(requests, sampling)
        raise AssertionError("unreachable")

    def _wait_restarted(self, i: int, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                ray.get(self.workers[i].ping.remote(), timeout=10)
                break
            except RECOVERABLE + (ray.exceptions.GetTimeoutError,):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        if self.bucket_refs:
            ray.get(self.workers[i].update_weights.remote(self.version, self.bucket_refs))

    def update_weights(self, version: int, buckets: list[dict] | list[ray.ObjectRef]) -> None:
        """Send new weights (buckets or their ObjectRefs) to every worker and wait until all have them."""
        refs = [b if isinstance(b, ray.ObjectRef) else ray.put(b) for b in buckets]
        self.version, self.bucket_refs = version, refs
        ray.get([w.update_weights.remote(version, refs) for w in self.workers])

    def weight_versions(self) -> list[int]:
        return ray.get([w.weight_version.remote() for w in self.workers])

    def shutdown(self) -> None:
        for worker in self.workers:
            ray.kill(worker, no_restart=True)


def shard(items: list, parts: int) -> list[list]:
    """Contiguous, near-equal shards (the first ones one longer), so order is kept by concatenation."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out

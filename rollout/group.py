"""A group of rollout workers as Ray actors: shard a batch, gather completions, survive a dead worker.

Actors are started with `max_restarts=-1`. When one dies mid-batch its shard fails with `RayActorError`; the
group waits until Ray has restarted it, gives it the latest weights again (a restarted actor starts from the
model directory) and dispatches the same shard once more. One that dies during a weight update gets the same
weights once it is back. Weights travel as bucket ObjectRefs (one object per bucket, shared by every worker,
each fetched and loaded in turn), on the learner's host as a slot of a shared-memory file the engines point at
(`share_weights`), or through a broadcast group of the workers and learner rank 0 (`rollout.weight_sync`), whose
fixed membership a restarted worker has left: it is an error then, not a worker generating with stale weights.

Ray itself (cluster start, placement groups) belongs to the caller; this module only creates actors on it,
each reserving its CPUs and GPUs (`num_gpus`: an actor that reserves none would see every GPU of its node), in
the bundle the caller's `actor_options` name. With colocated placement the engines `sleep()` while the
learners on their GPUs train and `wake_up()` before the next weight update.
"""

from __future__ import annotations

import time
from typing import Any

import ray
import torch
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from rollout.shared_weights import SharedWeightsLayout
from rollout.types import Completion, GenerationRequest, SamplingParams
from rollout.weight_sync import Plan
from rollout.worker import RolloutWorker

RECOVERABLE = (RayActorError, ActorDiedError, ActorUnavailableError)


class RolloutGroup:
    def __init__(self, model_dir: str, num_workers: int = 1, cpus_per_worker: float = 1.0,
                 max_redispatch: int = 2, threads: int | None = None, gpus_per_worker: float = 0,
                 actor_options: list[dict] | None = None, **worker_kwargs: Any):
        """`actor_options` (one dict per worker: num_cpus, num_gpus, scheduling_strategy) come from the
        caller's placement; without them each worker asks Ray for `cpus_per_worker` and `gpus_per_worker`."""
        if actor_options is None:
            actor_options = [{"num_cpus": cpus_per_worker, "num_gpus": gpus_per_worker}] * num_workers
        if len(actor_options) != num_workers:
            raise ValueError(f"{len(actor_options)} placements for {num_workers} rollout workers")
        actor = ray.remote(RolloutWorker)
        threads = threads or max(1, int(cpus_per_worker))
        self.workers = [actor.options(max_restarts=-1, max_task_retries=0, **options)
                        .remote(model_dir, worker_id=f"rollout-{i}", num_threads=threads, **worker_kwargs)
                        for i, options in enumerate(actor_options)]
        self.max_redispatch = max_redispatch
        self.engine = worker_kwargs.get("engine", "transformers")  # what the workers run (RolloutWorker's default)
        self.version = 0
        self.last_update: tuple[str, tuple] | None = None  # (worker method, args): replayed to a restarted worker
        self.redispatched = 0
        try:
            ray.get([w.ping.remote() for w in self.workers])
        except BaseException:  # e.g. the engine cannot be built: free the workers' CPUs and GPUs, then raise
            self.shutdown()
            raise

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        """Completions in request order (n per request), from contiguous shards across the workers. A seeded call
        gives each shard its own seed, so workers never draw the same random numbers."""
        return self.submit(requests, sampling).result()

    def submit(self, requests: list[GenerationRequest], sampling: SamplingParams) -> "PendingGeneration":
        """Start `generate` and return at once: the workers generate with the weights they hold now, while the
        caller does other work (the pipelined RL step trains on the previous batch meanwhile)."""
        shards = shard(requests, len(self.workers))
        samplings = [sampling if sampling.seed is None else sampling.model_copy(update={"seed": sampling.seed + i})
                     for i in range(len(shards))]
        futures = {i: self.workers[i].generate.remote(s, samplings[i]) for i, s in enumerate(shards) if s}
        return PendingGeneration(self, shards, samplings, futures)

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
        if self.last_update:
            method, args = self.last_update
            if method == "receive_broadcast":  # its group had a fixed membership; it would generate stale weights
                raise RuntimeError(f"rollout worker {i} was restarted and has left the weight broadcast group, so it "
                                   f"cannot get version {args[0]}; set rollout.weight_sync: object_store to survive "
                                   f"rollout worker restarts")
            ray.get(getattr(self.workers[i], method).remote(*args))

    def update_weights(self, version: int, buckets: list[dict] | list[ray.ObjectRef]) -> None:
        """Send new weights to every worker and wait until all have them: one ObjectRef per bucket (a dict is put
        first), which each worker fetches and loads one at a time."""
        refs = [b if isinstance(b, ray.ObjectRef) else ray.put(b) for b in buckets]
        self._send("update_weights", (version, refs))

    def weight_dtype(self) -> torch.dtype:
        """The dtype the engines hold their weights in (every worker runs the same engine and options)."""
        dtypes = set(ray.get([w.weight_dtype.remote() for w in self.workers]))
        if len(dtypes) != 1:
            raise RuntimeError(f"the rollout engines hold their weights in different dtypes: "
                               f"{sorted(map(str, dtypes))}")
        return dtypes.pop()

    def join_broadcast_group(self, host: str, port: int, backend: str) -> list[ray.ObjectRef]:
        """Every worker joins the weight broadcast group as ranks 1..N (rank 0 is learner rank 0, at host:port);
        returns the ObjectRefs, since the group forms only once its rank 0 joins too."""
        world_size = len(self.workers) + 1
        return [w.join_broadcast_group.remote(host, port, i + 1, world_size, backend)
                for i, w in enumerate(self.workers)]

    def receive_broadcast(self, version: int, plan: Plan) -> list[ray.ObjectRef]:
        """Every worker receives version bucket by bucket as `plan` lays them out (learner rank 0 sends meanwhile);
        returns the ObjectRefs. A worker restarted later is outside the group and cannot get these weights
        again: see `_wait_restarted`."""
        self.version, self.last_update = version, ("receive_broadcast", (version, plan))
        return [w.receive_broadcast.remote(version, plan) for w in self.workers]

    def share_weights(self, version: int, layout: SharedWeightsLayout) -> None:
        """Every worker points its engine at version's slot of the shared-memory file (`rollout.shared_weights`);
        the learner has written it. Only for workers on the learner's host."""
        self._send("share_weights", (version, layout))

    def _send(self, method: str, args: tuple) -> None:
        self.version, self.last_update = args[0], (method, args)
        futures = [getattr(w, method).remote(*args) for w in self.workers]
        for i, future in enumerate(futures):
            try:
                ray.get(future)
            except RECOVERABLE:  # died during the sync: once restarted it gets these weights again
                self.redispatched += 1
                self._wait_restarted(i)

    def sleep(self) -> None:
        """Colocated placement: every engine frees its GPU memory for the learners' step."""
        ray.get([w.sleep.remote() for w in self.workers])

    def wake_up(self) -> None:
        ray.get([w.wake_up.remote() for w in self.workers])

    def devices(self) -> list[dict]:
        """Each worker's node, reserved GPU ids and CUDA_VISIBLE_DEVICES."""
        return ray.get([w.devices.remote() for w in self.workers])

    def weight_versions(self) -> list[int]:
        return ray.get([w.weight_version.remote() for w in self.workers])

    def shutdown(self) -> None:
        for worker in self.workers:
            ray.kill(worker, no_restart=True)


class PendingGeneration:
    """A `RolloutGroup.submit` in flight. `result()` waits for its completions (once; later calls return the same
    list) and re-dispatches the shard of a worker that died, as `generate` does."""

    def __init__(self, group: RolloutGroup, shards: list[list], samplings: list[SamplingParams], futures: dict):
        self.group, self.shards, self.samplings, self.futures = group, shards, samplings, futures
        self.completions: list[Completion] | None = None

    def result(self) -> list[Completion]:
        if self.completions is None:
            done = {i: self.group._get_or_redo(i, future, self.shards[i], self.samplings[i])
                    for i, future in self.futures.items()}
            self.completions = [c for i in sorted(done) for c in done[i]]
        return self.completions


def shard(items: list, parts: int) -> list[list]:
    """Contiguous, near-equal shards (the first ones one longer), so order is kept by concatenation."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out

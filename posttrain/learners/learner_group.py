"""Learner group: N Ray actors, one torch.distributed process group (gloo on CPU, NCCL on GPU), one `Learner`
(DeepSpeed engine) per actor: data parallelism over ranks, ZeRO from the learner config.

`LearnerActor` is the Ray role (a thin shell around `Learner`; `ray.remote` is applied only where the group
launches it). `LearnerGroup` is the driver-side handle: it shards each batch over the ranks, calls every rank
(the engines' collectives need all of them) and returns rank 0's whole-batch metrics.

Boundary: placement is the caller's (`posttrain.placement` gives one `actor_options` dict per rank: CPUs,
GPUs, placement-group bundle); without it each actor asks Ray for `cpus_per_rank` CPUs and `gpus_per_rank`
GPUs. A rank trains on the GPU Ray reserved for it (`cuda:0` in the actor) or, having reserved none, on the CPU
with every GPU hidden; it sets torch's thread count to its CPUs, because oversubscribing cores is ruinous
(DESIGN.md). The caller owns `ray.init` (or uses `runtime.local_ray`), so several groups share one cluster.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from posttrain.learners.batch import TrainBatch, VisionLayout
from posttrain.learners.learner_config import LearnerConfig
from posttrain.learners.micro_batches import units_of
from posttrain.learners.rank_balance import CostModel, balanced_order, imbalance, inverse, row_costs


class LearnerActor:
    """One rank. Construct, then `init` once rank 0's address is known (multi-node safe)."""

    def __init__(self, num_threads: int):
        from runtime.devices import hide_unreserved_gpus

        self.gpu_ids = hide_unreserved_gpus()  # first: a rank that reserved no GPU must not initialise one
        self.num_threads = max(1, int(num_threads))
        torch.set_num_threads(self.num_threads)
        os.environ["OMP_NUM_THREADS"] = str(self.num_threads)
        self.learner = None
        self.shared_weights = None  # the layout this rank created, removed at shutdown
        self.broadcast = None  # rank 0, with rollout.weight_sync: broadcast: its group with the rollout workers

    def address(self) -> tuple[str, int]:
        import ray

        from posttrain.learners.engine_setup import free_port

        return ray.util.get_node_ip_address(), free_port()

    def devices(self) -> dict:
        from runtime.devices import visible_devices

        return visible_devices()

    def init(self, rank: int, world_size: int, master_addr: str, master_port: int, config: dict) -> bool:
        from posttrain.learners.engine_setup import reserved_device
        from posttrain.learners.learner import Learner

        device = reserved_device(self.gpu_ids, torch.cuda.is_available(), os.environ.get("CUDA_VISIBLE_DEVICES"))
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(rank),
                          WORLD_SIZE=str(world_size), LOCAL_RANK=str(device.index or 0))
        self.learner = Learner(LearnerConfig.model_validate(config), device=device)
        return True

    def vision_layout(self) -> VisionLayout | None:
        return self.learner.vision_layout

    def cost_model(self) -> CostModel:
        return CostModel.from_config(self.learner.module.config)

    def train_step(self, batch: TrainBatch) -> dict[str, float]:
        return self.learner.train_step(batch)

    def forward_logprobs(self, batch: TrainBatch, reference: bool = False) -> Tensor:
        return self.learner.forward_logprobs(batch, reference)

    def save(self, directory: str, data_state: dict | None = None) -> str:
        return str(self.learner.save(directory, data_state))

    def load(self, directory: str) -> dict:
        return self.learner.load(directory)

    def export_weights(self, bucket_bytes: int, dtype: torch.dtype | None = None) -> list[dict[str, Tensor]]:
        return self.learner.export_weights(bucket_bytes, dtype, rank0_only=True)

    def export_weight_refs(self, bucket_bytes: int, dtype: torch.dtype | None = None) -> list:
        """Rank 0: each bucket put into Ray's object store as its own object, as it is made (the other ranks
        join ZeRO-3's gathers and return []), so a rollout worker can fetch and load one bucket at a time."""
        import ray

        return [ray.put(bucket) for bucket in self.learner.stream_weights(bucket_bytes, dtype)]

    def join_weight_broadcast(self, host: str, port: int, world_size: int, backend: str) -> None:
        """Rank 0: become rank 0 of the rollout workers' broadcast group (its TCP store listens at host:port)."""
        from rollout.weight_sync import BroadcastGroup

        self.broadcast = BroadcastGroup(host, port, 0, world_size, backend)

    def weight_plan(self, bucket_bytes: int, dtype: torch.dtype | None = None):
        return self.learner.weight_plan(bucket_bytes, dtype)

    def broadcast_weights(self, bucket_bytes: int, dtype: torch.dtype | None = None) -> int:
        return self.learner.broadcast_weights(self.broadcast, bucket_bytes, dtype)

    def shared_weights_layout(self, root: str):
        self.shared_weights = self.learner.shared_weights_layout(root)
        return self.shared_weights

    def write_shared_weights(self, layout, version: int) -> int:
        return self.learner.write_shared_weights(layout, version)

    def release_cached_memory(self) -> None:
        """Hand the GPU blocks torch's allocator keeps cached back to the device, so a vLLM engine colocated on it
        can wake up (a no-op on the CPU)."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def local_parameters(self) -> dict[str, Tensor]:
        """This rank's own copy of each parameter (full under ZeRO 0-2, its partition under ZeRO-3)."""
        return {n: p.detach().cpu().clone() for n, p in self.learner.module.named_parameters()}

    def shutdown(self) -> None:
        import torch.distributed as dist

        if self.shared_weights:  # removed here, on its host (the driver may be elsewhere)
            self.shared_weights.remove()
        if dist.is_initialized():
            dist.barrier()  # without it, a rank that exits first can abort the others' last collective
            dist.destroy_process_group()


def launch_actors(actor_options: list[dict], num_threads: int, actor_class: type = LearnerActor) -> list:
    """One actor per options dict (rank order), not yet in a process group."""
    import ray

    remote = ray.remote(actor_class)
    return [remote.options(**options).remote(num_threads) for options in actor_options]


def start_ranks(actor_options: list[dict], num_threads: int, init_args: tuple, actor_class: type = LearnerActor,
                attempts: int = 3) -> list:
    """Launch the ranks and join them into one process group: `init(rank, world_size, addr, port, *init_args)`.

    Rank 0's port is found free and released again before torch's store binds it, so another process on the node
    (a second run, Ray's own workers) can take it in between. On EADDRINUSE the ranks are killed and started again
    on a new port; any other failure frees their CPUs and GPUs and is raised as it is.
    """
    import ray

    for attempt in range(1, attempts + 1):
        actors = launch_actors(actor_options, num_threads, actor_class)
        try:
            addr, port = ray.get(actors[0].address.remote())
            ray.get([actor.init.remote(rank, len(actors), addr, port, *init_args)
                     for rank, actor in enumerate(actors)])
            return actors
        except BaseException as error:
            for actor in actors:
                ray.kill(actor)
            if "EADDRINUSE" not in str(error) or attempt == attempts:
                raise


class LearnerGroup:
    def __init__(self, config: LearnerConfig, world_size: int = 1, cpus_per_rank: float = 1,
                 gpus_per_rank: float = 0, num_threads: int | None = None, actor_options: list[dict] | None = None):
        """`num_threads` (default: the CPUs asked for, at least 1) lets a fractional Ray CPU share still run
        torch on whole cores, e.g. on a box where rollout and learner alternate rather than overlap.
        `actor_options` (one dict per rank, from the caller's placement) replace `cpus_per_rank`/`gpus_per_rank`."""
        import ray

        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if actor_options is None:
            actor_options = [{"num_cpus": cpus_per_rank, "num_gpus": gpus_per_rank}] * world_size
        if len(actor_options) != world_size:
            raise ValueError(f"{len(actor_options)} placements for {world_size} learner ranks")
        self.config, self.world_size = config, world_size
        self.actors = start_ranks(actor_options, num_threads or max(1, int(cpus_per_rank)),
                                  (config.model_dump(mode="json"),))
        try:
            self.vision_layout = ray.get(self.actors[0].vision_layout.remote())
            self.cost_model = ray.get(self.actors[0].cost_model.remote())
        except BaseException:
            for actor in self.actors:  # free their CPUs and GPUs for whatever runs next
                ray.kill(actor)
            raise

    def _all(self, calls: list) -> list:
        import ray

        return ray.get(calls)

    def balance(self, batch: TrainBatch) -> tuple[TrainBatch, list[int] | None, dict[str, float]]:
        """The batch with its rows reordered so the ranks' contiguous shards cost alike in FLOPs
        (`learner.rank_balance: flops`), the order used (None: unchanged) and the imbalance before and after."""
        if self.world_size == 1 or self.config.rank_balance == "none":
            return batch, None, {}
        costs = row_costs(batch, self.vision_layout, self.cost_model)
        order = balanced_order(costs, units_of(batch), self.world_size)
        before = imbalance(costs, list(range(len(batch))), self.world_size)
        after = before if order is None else imbalance(costs, order, self.world_size)
        if after >= before:  # greedy LPT is not optimal: never worse than the split it would replace
            order, after = None, before
        metrics = {"balance/imbalance_before": before, "balance/imbalance_after": after}
        return (batch, None, metrics) if order is None else (batch.select(order, self.vision_layout), order, metrics)

    def shards(self, batch: TrainBatch) -> list[TrainBatch]:
        return [batch.shard(rank, self.world_size, self.vision_layout) for rank in range(self.world_size)]

    def train_step(self, batch: TrainBatch) -> dict[str, float]:
        """One update on the whole batch (split evenly over ranks, balanced by FLOPs); whole-batch metrics."""
        batch, _, balance = self.balance(batch)
        results = self._all([a.train_step.remote(s) for a, s in zip(self.actors, self.shards(batch))])
        return {**results[0], **balance}

    def forward_logprobs(self, batch: TrainBatch, reference: bool = False) -> Tensor:
        batch, order, _ = self.balance(batch)
        parts = self._all([a.forward_logprobs.remote(s, reference) for a, s in zip(self.actors, self.shards(batch))])
        logprobs = torch.cat(parts)
        return logprobs if order is None else logprobs[inverse(order)]

    def save(self, directory: str, data_state: dict | None = None) -> str:
        return self._all([a.save.remote(str(directory), data_state) for a in self.actors])[0]

    def load(self, directory: str) -> dict:
        return self._all([a.load.remote(str(directory)) for a in self.actors])[0]

    def export_weights(self, bucket_bytes: int = 256 << 20, dtype: torch.dtype | None = None) -> list[dict]:
        """Rank 0's buckets. Every rank is called at once: under ZeRO-3 each bucket is a gather needing all."""
        return self._all([a.export_weights.remote(bucket_bytes, dtype) for a in self.actors])[0]

    def export_weight_refs(self, bucket_bytes: int = 256 << 20, dtype: torch.dtype | None = None) -> list:
        """One ObjectRef per bucket of rank 0's weights, for rollout workers to fetch straight from the object
        store one at a time: the weights never pass through the driver, nor sit in one object."""
        return self._all([a.export_weight_refs.remote(bucket_bytes, dtype) for a in self.actors])[0]

    def broadcast_address(self) -> tuple[str, int]:
        """Rank 0's node IP (as Ray knows it: 127.0.0.1 on a loopback cluster) and a port free there."""
        return self._all([self.actors[0].address.remote()])[0]

    def join_weight_broadcast(self, host: str, port: int, world_size: int, backend: str):
        """Rank 0 joins the broadcast group as its rank 0; returns the ObjectRef, since the group forms only once
        every rollout worker joins too."""
        return self.actors[0].join_weight_broadcast.remote(host, port, world_size, backend)

    def weight_plan(self, bucket_bytes: int, dtype: torch.dtype | None = None):
        return self._all([self.actors[0].weight_plan.remote(bucket_bytes, dtype)])[0]

    def broadcast_weights(self, bucket_bytes: int, dtype: torch.dtype | None = None) -> list:
        """Start rank 0's broadcast (every rank is called: under ZeRO-3 each bucket is a gather needing all);
        returns the ObjectRefs, to be awaited with the rollout workers' receiving side."""
        return [a.broadcast_weights.remote(bucket_bytes, dtype) for a in self.actors]

    def shared_weights_layout(self, root: str):
        """Rank 0 creates the shared-memory file for `rollout.shared_weights` in a private directory under root
        (e.g. /dev/shm) and returns its layout."""
        return self._all([self.actors[0].shared_weights_layout.remote(root)])[0]

    def write_shared_weights(self, layout, version: int) -> int:
        """Every rank joins (ZeRO-3 gathers); rank 0 writes version's slot. Returns the bytes written."""
        return self._all([a.write_shared_weights.remote(layout, version) for a in self.actors])[0]

    def release_cached_memory(self) -> None:
        self._all([a.release_cached_memory.remote() for a in self.actors])

    def local_parameters(self) -> list[dict[str, Tensor]]:
        return self._all([a.local_parameters.remote() for a in self.actors])

    def devices(self) -> list[dict]:
        """Each rank's node, reserved GPU ids and CUDA_VISIBLE_DEVICES."""
        return self._all([a.devices.remote() for a in self.actors])

    def shutdown(self) -> None:
        import ray

        try:
            self._all([a.shutdown.remote() for a in self.actors])
        finally:
            for actor in self.actors:
                ray.kill(actor)
            self.actors = []

    def __enter__(self) -> LearnerGroup:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

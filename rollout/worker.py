"""The rollout role: one engine, generating its shard of a batch with the current weights.

A plain class, testable without Ray; `rollout.group` launches it as a Ray actor. Agentic requests go through
the agentic loop (code runs in the sandbox), the rest through the engine directly. Every completion is stamped
with the weight version it was sampled with, the worker's name and its timings. As a Ray actor it uses only
the GPUs it reserved (`runtime.devices`); the engine is exactly the one asked for (`rollout.engines`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from keye_protocol.chat import Mode, parse_mode
from rollout.agentic import AgenticLoop, ToolRunner
from runtime.devices import hide_unreserved_gpus, visible_devices
from rollout.engines import build_engine
from rollout.shared_weights import SharedWeightsLayout, slot_views
from rollout.types import Completion, GenerationRequest, SamplingParams
from rollout.weight_sync import BroadcastGroup, Plan


class RolloutWorker:
    def __init__(self, model_dir: str | Path, worker_id: str = "rollout-0", num_threads: int = 1,
                 engine: str = "transformers", engine_options: dict[str, Any] | None = None,
                 max_tool_turns: int = 3, run_tool: ToolRunner | None = None, sleeps: bool = False):
        """`engine` and `engine_options` build exactly that engine (`rollout.engines`); `sleeps` (colocated
        placement) requires an engine that can free its GPU memory while the learners train."""
        hide_unreserved_gpus()  # before anything touches CUDA: a worker that reserved no GPU must not use one
        torch.set_num_threads(max(1, num_threads))
        self.worker_id = worker_id
        self.engine = build_engine(engine, model_dir, **(engine_options or {}))
        if sleeps and not all(callable(getattr(self.engine, m, None)) for m in ("sleep", "wake_up")):
            raise TypeError(f"rollout engine {engine!r} has no sleep()/wake_up(): colocated placement needs an engine "
                            f"that frees its GPU memory while the learners train (vllm with enable_sleep_mode)")
        self.agentic = AgenticLoop(self.engine, run_tool or default_tool_runner(), max_tool_turns)
        self.broadcast_group: BroadcastGroup | None = None

    def ping(self) -> str:
        return self.worker_id

    def devices(self) -> dict:
        return {"worker": self.worker_id, **visible_devices()}

    # ------------------------------------------------------------------------------------------ colocation
    def sleep(self) -> None:
        """Free the engine's GPU memory (weights and KV cache) while the learners on this GPU train."""
        self.engine.sleep()

    def wake_up(self) -> None:
        """Take the GPU memory back before the next weight update and generation."""
        self.engine.wake_up()

    def weight_version(self) -> int:
        return self.engine.weight_version

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        start = time.perf_counter()
        agentic = [r for r in requests if r.mode is not None and parse_mode(r.mode) is Mode.AGENTIC]
        plain = [r for r in requests if r not in agentic]
        done = {}
        for batch, generate in ((plain, self.engine.generate), (agentic, self.agentic.generate)):
            if batch:
                for completion in generate(batch, sampling):
                    done[(completion.request_id, completion.sample_index)] = completion
        seconds = time.perf_counter() - start
        out = [done[(r.request_id, k)] for r in requests for k in range(sampling.n)]
        for completion in out:
            completion.worker = self.worker_id
            completion.timings["worker_s"] = seconds
        return out

    # ------------------------------------------------------------------------------------------ weights
    def update_weights(self, version: int, buckets: list[Any]) -> int:
        """Load a version bucket by bucket; a bucket is {name: tensor} or the ObjectRef of one (the object store
        path), fetched only when its turn comes, so the worker never holds more than one."""
        import ray

        loaded = 0
        for bucket in buckets:
            loaded += self.engine.load_weights(version, ray.get(bucket) if isinstance(bucket, ray.ObjectRef)
                                               else bucket)
        return loaded

    def share_weights(self, version: int, layout: SharedWeightsLayout) -> int:
        """Point the engine's parameters at version's slot of the shared-memory file (same host as the learner)."""
        if not callable(getattr(self.engine, "share_weights", None)):
            raise TypeError(f"rollout engine {type(self.engine).__name__} cannot take weights from shared memory; "
                            f"set rollout.weight_sync: object_store")
        return self.engine.share_weights(version, slot_views(layout, version))

    def weight_dtype(self) -> torch.dtype:
        """The dtype the engine holds its weights in: what the learner sends, so nothing crosses wider."""
        return self.engine.weight_dtype()

    def join_broadcast_group(self, host: str, port: int, rank: int, world_size: int, backend: str) -> None:
        """Become `rank` of the weight broadcast group whose rank 0 (learner rank 0) listens at host:port."""
        self.broadcast_group = BroadcastGroup(host, port, rank, world_size, backend)

    def receive_broadcast(self, version: int, plan: Plan) -> int:
        """Receive one version, bucket by bucket as `plan` lays them out, each loaded before the next arrives."""
        if self.broadcast_group is None:
            raise RuntimeError("receive_broadcast before join_broadcast_group")
        return sum(self.engine.load_weights(version, self.broadcast_group.receive_bucket(bucket)) for bucket in plan)

    def probe_logprobs(self, token_ids: list[int]) -> torch.Tensor:
        return self.engine.probe_logprobs(token_ids)


def default_tool_runner() -> ToolRunner:
    from rollout.sandbox_tool import sandbox_tool_runner

    return sandbox_tool_runner()

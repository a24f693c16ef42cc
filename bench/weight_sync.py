"""Weight sync on one host: time and peak memory of one sync through each transport (`rollout.weight_sync`).

A real DeepSpeed learner (one Ray actor) and a real rollout worker (one Ray actor, compact engine) on the model of
a `bench.rl_vs_trl` size, synced by the RL stage's own code (`posttrain.stages.rl.weight_sync`): the object
store (one object per 64 MB bucket, fetched and loaded one at a time), shared memory (the learner writes one slot
of a /dev/shm file the worker points its parameters at) and broadcast (a gloo group of learner rank 0 and the
worker, bucket by bucket). The transports alternate, `--rounds` times each; medians are reported.

Peak memory: while a sync runs, a thread here reads each side's resident memory every 2 ms; the peak above what
the process held just before is that side's cost. A streamed transport should stay within a few buckets on each
side whatever the model's size; the whole model as one list would cost the model (and more) on both. (That every
transport delivers the same weights is tested: tests/rollout/test_shared_weights.py, test_weight_sync*.py.)

Usage: python -m bench.weight_sync [--size tiny|mixed|large --rounds 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from contextlib import contextmanager

import psutil
import torch

from bench.rl_vs_trl import SIZES, prepare
from posttrain.learners.learner_config import LearnerConfig
from posttrain.learners.learner_group import LearnerGroup
from posttrain.stages.rl.weight_sync import BUCKET_BYTES, BroadcastSync, ObjectStoreSync, SharedMemorySync
from rollout.group import RolloutGroup
from runtime.local_ray import local_ray

TRANSPORTS = ("object_store", "shared_memory", "broadcast")


class PeakMemory:
    """The highest resident memory of some processes above their level at the start, sampled every 2 ms."""

    def __init__(self, pids: dict[str, int]):
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}

    @contextmanager
    def watch(self):
        start = {name: p.memory_info().rss for name, p in self.processes.items()}
        self.peak = dict(start)
        stop = threading.Event()

        def sample():
            while not stop.wait(0.002):
                for name, process in self.processes.items():
                    self.peak[name] = max(self.peak[name], process.memory_info().rss)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            self.added = {name: self.peak[name] - start[name] for name in self.processes}


def open_syncs(learners: LearnerGroup, rollout: RolloutGroup) -> dict:
    return {"object_store": ObjectStoreSync(learners, rollout), "shared_memory": SharedMemorySync(learners, rollout),
            "broadcast": BroadcastSync(learners, rollout, "gloo", one_host=True)}


def measure(size_name: str, rounds: int) -> dict:
    model_dir = prepare(SIZES[size_name]) / "model"
    seconds = {t: [] for t in TRANSPORTS}
    added = {t: {"learner": [], "worker": []} for t in TRANSPORTS}
    with local_ray(num_cpus=2):
        with LearnerGroup(LearnerConfig(model=str(model_dir), precision="fp32"), world_size=1,
                          cpus_per_rank=1) as learners:
            rollout = RolloutGroup(str(model_dir), num_workers=1, cpus_per_worker=0.5, engine="compact")
            syncs = open_syncs(learners, rollout)
            memory = PeakMemory({"learner": learners.devices()[0]["pid"], "worker": rollout.devices()[0]["pid"]})
            model_bytes = syncs["shared_memory"].layout.slot_bytes
            try:
                version = 1
                for _ in range(rounds):
                    for name, sync in syncs.items():
                        with memory.watch():
                            start = time.perf_counter()
                            sync.deliver(version, sync.publish(version))
                            seconds[name].append(time.perf_counter() - start)
                        assert rollout.weight_versions() == [version]
                        for side, grew in memory.added.items():
                            added[name][side].append(grew)
                        version += 1
            finally:
                for sync in syncs.values():
                    sync.close()
                rollout.shutdown()
    return {"size": size_name, "model_mb": model_bytes / 2**20, "bucket_mb": BUCKET_BYTES / 2**20,
            "rounds": rounds, "seconds": {t: statistics.median(v) for t, v in seconds.items()},
            "peak_added_mb": {t: {side: max(v) / 2**20 for side, v in sides.items()} for t, sides in added.items()},
            "runs": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    result = measure(args.size, args.rounds)
    print(f"\n{args.size}: {result['model_mb']:.1f} MB of fp32 weights, {result['bucket_mb']:.0f} MB buckets, "
          f"median time and highest memory added over {args.rounds} syncs each")
    print(f"  {'transport':<14}{'ms':>9}{'learner +MB':>13}{'worker +MB':>12}")
    for transport in TRANSPORTS:
        peak = result["peak_added_mb"][transport]
        print(f"  {transport:<14}{result['seconds'][transport] * 1000:>9.1f}{peak['learner']:>13.1f}"
              f"{peak['worker']:>12.1f}")
    print(json.dumps({"bench": "weight_sync", "torch": torch.__version__, **result}))


if __name__ == "__main__":
    main()

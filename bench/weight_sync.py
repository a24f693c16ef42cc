"""Weight sync on one host: Ray's object store (buckets) vs shared memory (`rollout.weight_sync`).

A real DeepSpeed learner (one Ray actor) and a real rollout worker (one Ray actor, compact engine) on the model of
a `bench.rl_vs_trl` size, as an RL step syncs them: the object store exports the learner's buckets and the worker
fetches and copies them in; shared memory has the learner write one slot of a /dev/shm file and the worker point
its parameters at it. The two alternate, `--rounds` times each; medians are reported. (That both transports deliver the same
weights is tested: tests/rollout/test_shared_weights.py, and `rl_vs_trl` runs learn bit-identically on either.)

Usage: python -m bench.weight_sync [--size tiny|mixed|large --rounds 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from bench.rl_vs_trl import SIZES, prepare
from posttrain.learners.learner_config import LearnerConfig
from posttrain.learners.learner_group import LearnerGroup, local_ray
from rollout.group import RolloutGroup
from rollout.shared_weights import SharedWeightsLayout

TRANSPORTS = ("object_store", "shared_memory")


def sync_once(transport: str, version: int, learners: LearnerGroup, rollout: RolloutGroup,
              layout: SharedWeightsLayout) -> float:
    start = time.perf_counter()
    if transport == "object_store":
        rollout.update_weights(version, learners.export_weight_refs(bucket_bytes=64 << 20))
    else:
        learners.write_shared_weights(layout, version)
        rollout.share_weights(version, layout)
    return time.perf_counter() - start


def measure(size_name: str, rounds: int) -> dict:
    model_dir = prepare(SIZES[size_name]) / "model"
    seconds = {t: [] for t in TRANSPORTS}
    with local_ray(num_cpus=2), tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        with LearnerGroup(LearnerConfig(model=str(model_dir), precision="fp32"), world_size=1,
                          cpus_per_rank=1) as learners:
            rollout = RolloutGroup(str(model_dir), num_workers=1, cpus_per_worker=0.5, engine="compact")
            try:
                layout = learners.shared_weights_layout(shm)
                version = 1
                for _ in range(rounds):
                    for transport in TRANSPORTS:
                        seconds[transport].append(sync_once(transport, version, learners, rollout, layout))
                        assert rollout.weight_versions() == [version]
                        version += 1
            finally:
                rollout.shutdown()
    megabytes = layout.slot_bytes / 2**20
    return {"size": size_name, "megabytes": megabytes, "rounds": rounds,
            **{t: statistics.median(v) for t, v in seconds.items()}, "runs": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    result = measure(args.size, args.rounds)
    print(f"\n{args.size}: {result['megabytes']:.1f} MB of fp32 weights, median of {args.rounds} syncs each")
    for transport in TRANSPORTS:
        print(f"  {transport:<14}{result[transport] * 1000:>9.1f} ms")
    print(f"  object_store / shared_memory = {result['object_store'] / result['shared_memory']:.1f}x")
    print(json.dumps({"bench": "weight_sync", "torch": torch.__version__, **result}))


if __name__ == "__main__":
    main()

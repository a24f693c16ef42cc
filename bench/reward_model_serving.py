"""What a reward model costs an RL step: `python -m bench.reward_model_serving [MODEL_DIR] [--samples 64]`.

Scores one RL step's worth of answers (addition prompts, think and no_think answers of tiny/rl_math's length)
in one process and run, and prints seconds per step:
- in this process: the `reward_model` reward batched (the whole step at once) and one sample at a time;
- through the rule-reward pool (one worker, as tiny/reward_model runs): math alone, then math + the RM in the
  same worker, so the difference is what the RM adds there;
- served (`serve:`): math in the pool while the RM runs on its own replicas (`--replicas`, one batch each),
  and through one replica one sample per call; what it adds is the step's time less math alone.
Every repeat scores fresh answers (math-verify caches what it parsed), the same ones on every path.
MODEL_DIR is a trained reward model, e.g. `runs/tiny-reward-model/02-rm/reward_model` after `posttrain run
tiny/reward_model`; without it, one of the same architecture is built from config (keye-tiny's decoder with a
random score head: the same cost per answer, not the same scores). The CPU model is printed: compare ratios
measured in one run.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def step_samples(n: int, seed: int = 0):
    from rewards.sample import Sample

    rng = random.Random(seed)
    samples = []
    for i in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        answer = a + b + rng.choice([0, 0, 10, -10])
        think = f"<think>{a % 10}+{b % 10}={a % 10 + b % 10}.\n{a // 10}+{b // 10}.</think>" if i % 2 else ""
        completion = f"{think}<answer>\\boxed{{{answer}}}</answer>" if think else f"\\boxed{{{answer}}}"
        samples.append(Sample(prompt=f"What is {a} + {b}?", completion=completion, ground_truth=str(a + b)))
    return samples


def built_reward_model(out: Path) -> str:
    """A reward model as the reward_model stage starts one (keye-tiny's decoder), with a random head."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from keye_vl.weights import init_model_dir
    from posttrain.reward_model_init import init_reward_model

    init_model_dir(out / "policy", "keye-tiny")
    init_reward_model(out / "policy", out / "rm")
    model = AutoModelForSequenceClassification.from_pretrained(str(out / "rm"))
    torch.manual_seed(0)
    with torch.no_grad():
        model.score.weight.normal_()
    model.save_pretrained(out / "rm")
    return str(out / "rm")


def median_seconds(score, repeats: int, n: int) -> float:
    """Median seconds of `score(samples)` over fresh samples per repeat, after one warm-up call."""
    score(step_samples(n, seed=10_000))
    times = []
    for repeat in range(repeats):
        samples = step_samples(n, seed=repeat)
        start = time.perf_counter()
        score(samples)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def in_process(model_dir: str, args) -> dict[str, float]:
    from rewards.reward_model import RewardModelScorer

    batched = RewardModelScorer(model_dir, batch_size=args.samples, threads=args.threads, max_length=256)
    single = RewardModelScorer(model_dir, batch_size=1, threads=args.threads, max_length=256)
    samples = step_samples(args.samples)
    assert all(abs(x - y) < 1e-4 for x, y in zip(batched(samples), single(samples)))  # same scores either way
    return {"in process, batched": median_seconds(batched, args.repeats, args.samples),
            "in process, one at a time": median_seconds(single, args.repeats, args.samples)}


def through_ray(model_dir: str, args) -> dict[str, float]:
    from rewards.model_server import ServeConfig
    from rewards.pool import PoolConfig, RewardPool
    from runtime.local_ray import local_ray
    from rewards.served import ServedComponent, ServedRewards

    rm = {"weight": 0.2, "options": {"model": model_dir, "max_length": 256, "threads": args.threads}}
    pool_config = PoolConfig(num_workers=1, cpus_per_worker=0.25, timeout_s=60, spare=False)
    times = {}
    with local_ray(num_cpus=2, object_store_mb=128):
        with RewardPool({"math": 1.0}, config=pool_config) as pool:
            times["pool: math alone"] = median_seconds(checked(pool), args.repeats, args.samples)
        with RewardPool({"math": 1.0, "reward_model": rm}, config=pool_config) as pool:
            times["pool: math + RM in the worker"] = median_seconds(checked(pool), args.repeats, args.samples)
        split = -(-args.samples // args.replicas)  # one batch per replica
        for label, replicas, batch in ((f"served: math + RM, {args.replicas} replica(s) x {split}", args.replicas,
                                        split), ("served: math + RM, one sample per call", 1, 1)):
            serve = ServeConfig(replicas=replicas, cpus=args.threads / max(1, replicas), batch_size=batch,
                                timeout_s=60)
            component = ServedComponent("reward_model", 0.2, rm["options"], serve)
            with ServedRewards({"math": 1.0}, [component], pool_config) as served:
                times[label] = median_seconds(checked(served), args.repeats, args.samples)
    return times


def checked(scorer):
    def score(samples):
        batch = scorer.score(samples)
        assert batch.metrics["reward/errors"] == 0, batch.metrics
    return score


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", nargs="?", help="a trained reward model (default: build one from config)")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, as a reward worker gets")
    parser.add_argument("--replicas", type=int, default=1, help="reward-model server replicas")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or built_reward_model(Path(tmp))
        source = args.model_dir or "built from config (keye-tiny decoder, random head)"
        times = {**in_process(model_dir, args), **through_ray(model_dir, args)}
    print(f"reward model: {source}")
    print(f"{args.samples} samples per step, {args.threads} thread(s), median of {args.repeats}, on {cpu_model()}:")
    base = times["pool: math alone"]
    for name, seconds in times.items():
        added = f"  RM adds {seconds - base:+.3f} s" if name.startswith(("pool: math +", "served")) else ""
        print(f"  {name:40s} {seconds:.3f} s/step{added}")
    print(f"  batching is {times['in process, one at a time'] / times['in process, batched']:.1f}x faster in process")


if __name__ == "__main__":
    main()

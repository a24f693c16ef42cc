"""Reward throughput and latency: `python bench/rewards.py [--samples N]`.

Measures, on this machine:
- math rewards/s: math-verify called directly in one process, vs the math reward through the Ray pool
  with 1 and 2 workers (every run gets fresh problems: math-verify caches parsed strings);
- pool overhead per sample: a reward that returns a constant, through the pool (target <= 2 ms);
- sandbox start-to-result latency: `run_code("print(1)")`, and a crop of an input image.
Prints a comparison table. Ray runs on a loopback cluster that is always shut down.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def constant_reward(sample) -> float:
    """The cheapest possible reward: what remains of its cost through the pool is the pool's overhead."""
    return 1.0


def math_samples(n: int, seed: int):
    from rewards.sample import Sample

    rng = random.Random(seed)
    samples = []
    for _ in range(n):
        a, b = rng.randint(1, 999), rng.randint(2, 999)
        right = rng.random() < 0.5
        shown = f"\\frac{{{a}}}{{{b}}}" if right else f"\\frac{{{a + 1}}}{{{b}}}"
        samples.append(Sample(prompt=f"What is {a}/{b}? /think", ground_truth=f"{a / b:.12g}" if b in (2, 4, 5, 8)
                              else f"{a}/{b}", completion=f"<think>divide</think><answer>\\boxed{{{shown}}}</answer>"))
    return samples


def direct_math(samples) -> float:
    """math-verify itself, in this process: parse both sides and verify (the floor any pool must beat)."""
    from math_verify import parse, verify

    import rewards.math_answer  # noqa: F401  (silences math-verify's "timeout is disabled" notice)

    verify(parse("$1$", parsing_timeout=None), parse("1", parsing_timeout=None), timeout_seconds=None)  # warm up
    start = time.perf_counter()
    for s in samples:
        gold = parse(f"${s.ground_truth}$", parsing_timeout=None)
        verify(gold, parse(f"\\boxed{{{s.boxed}}}", parsing_timeout=None), timeout_seconds=None)
    return len(samples) / (time.perf_counter() - start)


def in_process_reward(samples) -> float:
    from rewards.math_answer import math_reward

    math_reward(samples[0])  # warm up
    start = time.perf_counter()
    for s in samples:
        math_reward(s)
    return len(samples) / (time.perf_counter() - start)


def pool_rate(spec: str, workers: int, samples, repeats: int = 1) -> tuple[float, float]:
    """(samples/s, seconds per sample) through a pool, after one warm-up batch."""
    from rewards.pool import PoolConfig, RewardPool

    config = PoolConfig(num_workers=workers, cpus_per_worker=1.0 / workers, timeout_s=60, spare=False)
    with RewardPool(spec, config=config) as pool:
        pool.score(samples[: 2 * workers])
        start = time.perf_counter()
        for _ in range(repeats):
            batch = pool.score(samples)
        seconds = time.perf_counter() - start
        assert batch.metrics["reward/errors"] == 0, batch.metrics
    n = len(samples) * repeats
    return n / seconds, seconds / n


def sandbox_latency(runs: int) -> tuple[float, float]:
    from PIL import Image

    from rewards.sandbox import run_code

    run_code("pass")  # first run probes the network namespace
    plain, image = [], []
    picture = Image.new("RGB", (256, 256), (0, 128, 255))
    for _ in range(runs):
        start = time.perf_counter()
        assert run_code("print(1)").ok
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = run_code("image.crop((0, 0, 64, 64)).save('crop.png')", images=[picture])
        assert result.ok and result.image_names == ["crop.png"]
        image.append(time.perf_counter() - start)
    return statistics.median(plain), statistics.median(image)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--overhead-samples", type=int, default=2000)
    parser.add_argument("--sandbox-runs", type=int, default=10)
    args = parser.parse_args()

    from runtime.local_ray import local_ray

    rows = [("math-verify direct, 1 process", f"{direct_math(math_samples(args.samples, 0)):.0f} /s", ""),
            ("math reward in process (extraction + verify)", f"{in_process_reward(math_samples(args.samples, 1)):.0f} /s",
             "")]
    with local_ray(num_cpus=2, object_store_mb=128):
        for workers in (1, 2):
            rate, _ = pool_rate("math", workers, math_samples(args.samples, 10 + workers))
            rows.append((f"math reward through pool, {workers} worker(s)", f"{rate:.0f} /s", ""))
        trivial = [s for s in math_samples(args.overhead_samples, 99)]
        for workers in (1, 2):
            _, per = pool_rate(f"{Path(__file__).resolve()}:constant_reward", workers, trivial, repeats=3)
            rows.append((f"pool overhead per sample, {workers} worker(s)", f"{per * 1e3:.3f} ms",
                         "target <= 2 ms: " + ("met" if per <= 2e-3 else "MISSED")))
    plain, image = sandbox_latency(args.sandbox_runs)
    rows.append(("sandbox start-to-result, print(1)", f"{plain * 1e3:.0f} ms", "median"))
    rows.append(("sandbox start-to-result, crop an input image", f"{image * 1e3:.0f} ms", "median"))

    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>10}  note")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

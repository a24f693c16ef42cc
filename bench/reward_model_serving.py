"""What a reward model costs a step: `python -m bench.reward_model_serving MODEL_DIR [--samples 64]`.

Scores one RL step's worth of answers (addition prompts, think and no_think answers of tiny/rl_math's length)
with the `reward_model` reward, batched as the pool calls it (the whole chunk at once) and one sample at a time,
in the same process and run, and prints seconds per step and the ratio. MODEL_DIR is a trained reward model,
e.g. `runs/tiny-reward-model/02-rm/reward_model` after `posttrain run tiny/reward_model`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time


def step_samples(n: int, seed: int = 0):
    from rewards.sample import Sample

    rng = random.Random(seed)
    samples = []
    for i in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        answer = a + b + rng.choice([0, 0, 10, -10])
        think = f"<think>{a % 10}+{b % 10}={a % 10 + b % 10}.\n{a // 10}+{b // 10}.</think>" if i % 2 else ""
        samples.append(Sample(prompt=f"What is {a} + {b}?", completion=f"{think}<answer>\\boxed{{{answer}}}</answer>"
                              if think else f"\\boxed{{{answer}}}"))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, as a reward worker gets")
    args = parser.parse_args()

    from rewards.reward_model import RewardModelScorer

    samples = step_samples(args.samples)
    batched = RewardModelScorer(args.model_dir, batch_size=args.samples, threads=args.threads, max_length=256)
    single = RewardModelScorer(args.model_dir, batch_size=1, threads=args.threads, max_length=256)
    assert all(abs(x - y) < 1e-4 for x, y in zip(batched(samples), single(samples)))  # same scores either way
    times = {"batched": [], "one at a time": []}
    for _ in range(args.repeats):
        for name, scorer in (("batched", batched), ("one at a time", single)):
            start = time.perf_counter()
            scorer(samples)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.samples} samples per step, {args.threads} thread(s), median of {args.repeats}:")
    for name, seconds in medians.items():
        print(f"  {name:14s} {seconds:.3f} s/step  ({seconds / args.samples * 1e3:.2f} ms/sample)")
    print(f"  batching is {medians['one at a time'] / medians['batched']:.1f}x faster")


if __name__ == "__main__":
    main()

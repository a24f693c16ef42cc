"""What a seed on every vLLM request costs: the same batch with per-request seeds and with none.

vLLM draws the random numbers of a batch's unseeded requests in one call, and those of seeded requests one
request at a time from each one's own generator, at every decode step (`v1/sample/ops/topk_topp_sampler.py`; on
CUDA a seeded request also turns FlashInfer's sampler off). `rollout.vllm_engine` therefore seeds each call once
(the workers' generator, `posttrain_reseed`) and sends no per-request seeds; this measures what that saves.

Runs in .venv-vllm (`make test-vllm` builds it) on `bench.rl_vs_trl`'s cached model of the size; rounds alternate.
Usage: python -m bench.vllm_seeds [--size tiny|mixed --prompts 16 --n 8 --rounds 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from bench.rl_vs_trl import SIZES, prepare, read_jsonl
from posttrain.prompts import request_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", choices=sorted(SIZES))
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import SamplingParams as VllmSampling

    from rollout.vllm_engine import VLLMEngine, vllm_prompt

    size = SIZES[args.size]
    data = prepare(size)
    engine = VLLMEngine(data / "model", dtype="float32", enforce_eager=True, seed=0)
    rows = read_jsonl(data / "eval.jsonl")[:args.prompts]
    prompts = [vllm_prompt(engine.encoder.encode(request_of(r)), engine.encoder) for r in rows]

    def run(seeded: bool) -> tuple[float, int]:
        params = [VllmSampling(n=args.n, temperature=1.0, max_tokens=size.max_tokens, logprobs=0,
                               seed=i * args.n if seeded else None) for i in range(len(prompts))]
        start = time.perf_counter()
        outputs = engine.llm.generate(prompts, params, use_tqdm=False)
        return time.perf_counter() - start, sum(len(s.token_ids) for o in outputs for s in o.outputs)

    run(False), run(True)  # warm-up
    times = {"unseeded": [], "seeded": []}
    for _ in range(args.rounds):
        for name in times:
            times[name].append(run(name == "seeded"))
    print(f"{args.size}: {len(prompts)} prompts x {args.n} samples, vLLM-CPU, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    for name, runs in times.items():
        seconds = statistics.median(s for s, _ in runs)
        tokens = statistics.median(t for _, t in runs)
        print(f"  {name:<9} {seconds:7.3f} s  {tokens / seconds:8.0f} tokens/s")
    ratio = statistics.median(s for s, _ in times["seeded"]) / statistics.median(s for s, _ in times["unseeded"])
    print(f"  per-request seeds cost {100 * (ratio - 1):+.1f}% time")


if __name__ == "__main__":
    main()

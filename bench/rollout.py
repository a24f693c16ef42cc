"""Rollout engine throughput and weight-sync cost.

1. Generated tokens/s of `TransformersEngine` against plain `model.generate` on the same batch (same prompts
   repeated n times, same sampling, fixed length): the engine's bookkeeping (encoding, logprobs, stop checks)
   must cost <= 5% (target ratio >= 0.95). A/B alternate; medians reported.
2. Weight sync: seconds and bytes to bucket a model's weights and load them into an engine, for keye-tiny and
   a ~100M-parameter Qwen3 decoder, locally and through Ray's object store.

Usage: python -m bench.rollout [--prompts 8 --n 4 --tokens 64 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from keye_vl.tokenizer import build_tiny_tokenizer
from keye_vl.weights import init_model_dir
from rollout.hf_engine import TransformersEngine
from rollout.types import GenerationRequest, SamplingParams
from rollout.weight_sync import bucket_bytes, bucket_tensors


def engine_vs_generate(engine: TransformersEngine, prompts: int, n: int, tokens: int, repeats: int) -> dict:
    requests = [GenerationRequest(str(i), [{"role": "user", "content": f"What is {i} + {2 * i}?"}], "think")
                for i in range(prompts)]
    sampling = SamplingParams(n=n, temperature=1.0, top_p=1.0, top_k=0, max_tokens=tokens, seed=0)
    encoded = [engine.encoder.encode(r) for r in requests for _ in range(n)]
    from rollout.encoding import collate

    batch = collate(encoded, engine.encoder.pad_id)

    def run_engine():
        start = time.perf_counter()
        out = engine.generate(requests, sampling)
        return sum(c.num_tokens for c in out) / (time.perf_counter() - start)

    def run_plain():
        torch.manual_seed(0)
        start = time.perf_counter()
        with torch.no_grad():
            out = engine.model.generate(**batch, max_new_tokens=tokens, do_sample=True, temperature=1.0, top_p=1.0,
                                        top_k=None, eos_token_id=engine.encoder.eos_ids,
                                        pad_token_id=engine.encoder.pad_id)
        generated = out[:, batch["input_ids"].shape[1]:]
        return int((generated != engine.encoder.pad_id).sum()) / (time.perf_counter() - start)

    run_engine(), run_plain()  # warm up
    rates = {"engine": [], "model.generate": []}
    for _ in range(repeats):
        rates["engine"].append(run_engine())
        rates["model.generate"].append(run_plain())
    return {k: statistics.median(v) for k, v in rates.items()}


def sync_cost(model, engine_model, label: str) -> dict:
    import ray

    start = time.perf_counter()
    buckets = bucket_tensors(model.named_parameters(), 16 << 20)
    bucket_s = time.perf_counter() - start
    engine = TransformersEngine(engine_model, build_tiny_tokenizer())
    start = time.perf_counter()
    for bucket in buckets:
        engine.load_weights(1, bucket)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    refs = [ray.put(b) for b in buckets]
    for ref in refs:
        engine.load_weights(2, ray.get(ref))
    ray_s = time.perf_counter() - start
    return {"model": label, "bytes": bucket_bytes(buckets), "buckets": len(buckets), "bucket_s": bucket_s,
            "load_s": load_s, "ray_put_get_load_s": ray_s}


def qwen3_100m() -> Qwen3ForCausalLM:
    config = Qwen3Config(vocab_size=1032, hidden_size=768, intermediate_size=2560, num_hidden_layers=12,
                         num_attention_heads=12, num_key_value_heads=4, head_dim=64)
    return Qwen3ForCausalLM(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from runtime.local_ray import local_ray

    with tempfile.TemporaryDirectory() as tmp:
        init_model_dir(tmp, "keye-tiny")
        engine = TransformersEngine.from_pretrained(tmp)
        rates = engine_vs_generate(engine, args.prompts, args.n, args.tokens, args.repeats)
        ratio = rates["engine"] / rates["model.generate"]
        print(f"{'path':<16}{'generated tokens/s':>20}")
        for name, rate in rates.items():
            print(f"{name:<16}{rate:>20,.0f}")
        print(f"ratio engine/generate = {ratio:.3f} (target >= 0.95) {'OK' if ratio >= 0.95 else 'MISSED'}")
        with local_ray(num_cpus=1, log_to_driver=False):
            tiny = TransformersEngine.from_pretrained(tmp).model
            syncs = [sync_cost(engine.model, tiny, "keye-tiny"), sync_cost(qwen3_100m(), qwen3_100m(), "qwen3-100m")]
    print(f"\n{'model':<12}{'MB':>8}{'bucket s':>10}{'load s':>9}{'via ray s':>11}")
    for s in syncs:
        print(f"{s['model']:<12}{s['bytes'] / 1e6:>8.1f}{s['bucket_s']:>10.3f}{s['load_s']:>9.3f}"
              f"{s['ray_put_get_load_s']:>11.3f}")
    print(json.dumps({"bench": "rollout", "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "tokens_per_s": rates, "ratio": ratio, "sync": syncs, **vars(args)}))


if __name__ == "__main__":
    main()

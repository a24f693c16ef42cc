"""Forward+backward throughput of keye-tiny on a text-only batch vs transformers' Qwen3ForCausalLM.

Both models have the same decoder (layers, widths, heads, vocab); Keye adds 3-D RoPE and the vision tower
(unused for text). The target is a ratio >= 0.9: the multimodal plumbing must not tax text training.
Runs alternate A/B and report medians. Usage: python -m bench.model [--batch 8 --seq 256 --steps 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date

import torch
import transformers
from transformers import Qwen3Config, Qwen3ForCausalLM

from keye_vl import KeyeVLConfig, KeyeForConditionalGeneration


def qwen3_twin(config: KeyeVLConfig) -> Qwen3ForCausalLM:
    text = config.text_config
    fields = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps")
    twin = Qwen3Config(**{f: getattr(text, f) for f in fields}, tie_word_embeddings=False)
    return Qwen3ForCausalLM(twin)


def step_seconds(model, ids: torch.Tensor, autocast: bool) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 master weights)")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = KeyeVLConfig.from_preset("keye-tiny")
    models = {"keye-tiny": KeyeForConditionalGeneration(config).train(), "qwen3": qwen3_twin(config).train()}
    ids = torch.randint(30, config.text_config.vocab_size, (args.batch, args.seq))
    for model in models.values():
        for _ in range(2):
            step_seconds(model, ids, args.bf16)
    times = {name: [] for name in models}
    for _ in range(args.steps):
        for name, model in models.items():  # alternate so drift hits both equally
            times[name].append(step_seconds(model, ids, args.bf16))
    tokens = args.batch * args.seq
    result = {name: tokens / statistics.median(t) for name, t in times.items()}
    ratio = result["keye-tiny"] / result["qwen3"]
    print(f"{'model':<12}{'tokens/s (fwd+bwd)':>20}")
    for name, tps in result.items():
        print(f"{name:<12}{tps:>20,.0f}")
    print(f"ratio keye/qwen3 = {ratio:.3f} (target >= 0.9) {'OK' if ratio >= 0.9 else 'MISSED'}")
    print(json.dumps({"bench": "model", "date": str(date.today()), "machine": platform.machine(),
                      "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "transformers": transformers.__version__, "batch": args.batch, "seq": args.seq,
                      "bf16": args.bf16, "tokens_per_s": result, "ratio": ratio}))


if __name__ == "__main__":
    main()

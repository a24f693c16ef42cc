"""Learner update of one GRPO batch with and without shared-prefix micro-batches (`learner.shared_prefix`).

One learner per model; each step is `train_step` on the same batch (lr 0, so every step sees the same weights),
alternating row-per-sample (`micro_batching: bucket`) and shared-prefix (`bucket`, one group per row), the
fastest of `--steps` after `--warmup` kept per side. Reported: seconds per update, the tokens each layout
computes, and row-per-sample / shared-prefix (above 1: shared is faster). Cases:
- `qwen`: a ~26M Qwen3 (the `large` size of `bench/rl_vs_trl`: hidden 512, 8 layers), `--groups` prompts of
  `--prompt-len` random tokens with group 8, completions of 40-128 tokens;
- `keye`: keye-tiny with one 448x448 image per prompt (256 vision tokens, 1024 patches) and a short question,
  group 8, completions of 20-60 tokens.
On CPU the shared layout's attention is a dense masked SDPA over prompt + G completions, so the
completion-to-completion blocks are computed and thrown away: the saving is the prompt's G-1 repeats in the
projections, MLPs and the vision tower, minus that waste (long completions, short prompts gain least).
Usage: python -m bench.shared_prefix [--case qwen|keye|both --groups 4 --prompt-len 48 --steps 2 --warmup 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import date

import torch

from keye_vl.weights import init_model_dir
from posttrain.learners.batch import TrainBatch
from posttrain.learners.learner import Learner
from posttrain.learners.learner_config import LearnerConfig

GROUP = 8


def grouped(prompts: list[list[int]], completions: list[list[list[int]]], pad: int, **vision) -> TrainBatch:
    sequences = [p + c for p, cs in zip(prompts, completions) for c in cs]
    starts = [len(p) for p, cs in zip(prompts, completions) for _ in cs]
    g = torch.Generator().manual_seed(0)
    ids = torch.full((len(sequences), max(map(len, sequences))), pad, dtype=torch.long)
    attn, loss = torch.zeros_like(ids), torch.zeros_like(ids)
    for b, (s, p) in enumerate(zip(sequences, starts)):
        ids[b, :len(s)] = torch.tensor(s)
        attn[b, :len(s)] = 1
        loss[b, p:len(s)] = 1
    return TrainBatch(ids, attn, loss, old_logprobs=-torch.rand(ids.shape, generator=g) * 4 * loss,
                      advantages=torch.randn(len(sequences), generator=g),
                      group_ids=torch.arange(len(sequences)) // GROUP, **vision)


def random_completions(g: torch.Generator, low: int, high: int, vocab: int) -> list[list[int]]:
    return [torch.randint(30, vocab, (int(torch.randint(low, high + 1, (1,), generator=g)),),
                          generator=g).tolist() for _ in range(GROUP)]


def qwen_case(groups: int, prompt_len: int) -> tuple[str, TrainBatch]:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    vocab = 2048
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=vocab, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=4, head_dim=64, max_position_embeddings=1024,
                         tie_word_embeddings=False, pad_token_id=0)
    out = tempfile.mkdtemp(prefix="bench-shared-qwen-")
    Qwen3ForCausalLM(config).save_pretrained(out)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(30, vocab, (prompt_len,), generator=g).tolist() for _ in range(groups)]
    return out, grouped(prompts, [random_completions(g, 40, 128, vocab) for _ in prompts], 0)


def keye_case(groups: int) -> tuple[str, TrainBatch]:
    from PIL import Image

    from keye_vl.presets import preset_processing
    from keye_vl.processing import KeyeVLProcessor
    from keye_vl.tokenizer import build_tiny_tokenizer

    out = tempfile.mkdtemp(prefix="bench-shared-keye-")
    init_model_dir(out, "keye-tiny")
    tokenizer = build_tiny_tokenizer()
    vision = preset_processing("keye-tiny").model_copy(update={"max_pixels": 256 * 28 * 28})
    processor = KeyeVLProcessor.build(tokenizer, vision)
    g = torch.Generator().manual_seed(1)
    prompts, pixels, grids = [], [], []
    for k in range(groups):
        image = Image.fromarray(torch.randint(0, 255, (448, 448, 3), generator=g, dtype=torch.uint8).numpy())
        conv = [{"role": "user", "content": [{"type": "image", "image": image},
                                             {"type": "text", "text": f"How many shapes are in picture {k}?"}]}]
        encoded = processor.process_conversations([conv], mode="think")
        prompts.append(encoded["input_ids"][0].tolist())
        pixels += [encoded["pixel_values"]] * GROUP  # as the RL batch: the prompt's pixels on every row
        grids += [encoded["image_grid_thw"]] * GROUP
    completions = [random_completions(g, 20, 60, len(tokenizer)) for _ in prompts]
    return out, grouped(prompts, completions, tokenizer.pad_token_id, pixel_values=torch.cat(pixels),
                        image_grid_thw=torch.cat(grids))


def time_case(name: str, model_dir: str, batch: TrainBatch, steps: int, warmup: int) -> dict:
    learner = Learner(LearnerConfig(model=model_dir, lr=0.0, precision="fp32", micro_batching="bucket",
                                    loss={"name": "grpo"}))
    times: dict[bool, list[float]] = {False: [], True: []}
    tokens: dict[bool, float] = {}
    for i in range(warmup + steps):
        for shared in (False, True):  # alternate so drift hits both alike
            learner.config.shared_prefix = shared
            start = time.perf_counter()
            metrics = learner.train_step(batch)
            if i >= warmup:
                times[shared].append(time.perf_counter() - start)
            tokens[shared] = metrics["tokens"]
    rows, shared = min(times[False]), min(times[True])
    result = {"case": name, "rows": len(batch), "groups": len(batch) // GROUP, "row_per_sample_s": round(rows, 3),
              "shared_prefix_s": round(shared, 3), "tokens_rows": tokens[False], "tokens_shared": tokens[True],
              "ratio": round(rows / shared, 3)}
    print(f"{name:<6} update: row-per-sample {rows:.2f} s ({tokens[False]:.0f} tokens), shared-prefix "
          f"{shared:.2f} s ({tokens[True]:.0f} tokens): {rows / shared:.2f}x")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("qwen", "keye", "both"), default="both")
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=48, help="qwen case: prompt tokens")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    results = []
    if args.case in ("keye", "both"):
        results.append(time_case("keye", *keye_case(args.groups), args.steps, args.warmup))
    if args.case in ("qwen", "both"):
        results.append(time_case("qwen", *qwen_case(args.groups, args.prompt_len), args.steps, args.warmup))
    print(json.dumps({"bench": "shared_prefix", "date": str(date.today()), "machine": platform.machine(),
                      "threads": torch.get_num_threads(), "torch": torch.__version__, "results": results}))


if __name__ == "__main__":
    main()

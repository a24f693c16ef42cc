"""Training throughput of the DeepSpeed `Learner` vs a plain torch loop and TRL's SFTTrainer, same model and batch.

All contenders train the same model (SFT, loss on completion tokens) on one ragged batch of B sequences with
lengths drawn uniformly from [min-len, max-len], in `accum` micro-batches per optimizer step, AdamW, clipping
at 1.0. Reported: real (non-padding) training tokens per second from the fastest step of each contender (the
machine is shared, and the minimum is the least-disturbed estimate); runs alternate so drift hits all alike.
Targets: learner (micro_batching=none, the torch loop's own padding) / torch >= 0.9, i.e. the DeepSpeed engine,
loss plumbing and metrics cost < 10%; bucketing and packing should then beat torch by removing padding, whose
fraction is reported per mode. TRL (if installed) runs its own loop with a step timer,
first, before this process joins a torch.distributed group (else accelerate would wrap the model in DDP).
Models: `qwen3` (default), a Qwen3ForCausalLM with keye-tiny's decoder, or `keye` (keye-tiny itself; TRL 1.16's
fused LM head needs `model.base_model` to be the decoder backbone, which Keye's class layout does not give, so
the TRL line is skipped there).
Usage: python -m bench.learner [--model qwen3|keye --batch 16 --min-len 64 --max-len 256 --accum 2 --bf16]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import date

import torch
import transformers

from keye_vl.weights import init_model_dir
from posttrain.learners.batch import TrainBatch
from posttrain.learners.learner import Learner
from posttrain.learners.learner_config import LearnerConfig

PROMPT = 16  # leading tokens of each row without loss


def make_batch(rows: int, min_len: int, max_len: int, vocab: int) -> TrainBatch:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(min_len, max_len + 1, (rows,), generator=g)
    attn = (torch.arange(max_len) < lengths.unsqueeze(1)).long()
    ids = torch.randint(30, vocab, (rows, max_len), generator=g) * attn
    loss = attn.clone()
    loss[:, :PROMPT] = 0
    return TrainBatch(ids, attn, loss)


class TorchLoop:
    """The baseline: the padded batch split in order into micro-batches, token-mean NLL over the whole batch."""

    def __init__(self, model, batch: TrainBatch, accum: int, bf16: bool):
        self.model, self.batch, self.accum, self.bf16 = model.train(), batch, accum, bf16
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.labels = batch.input_ids.masked_fill(batch.loss_mask == 0, -100)

    def step(self) -> None:
        total = int((self.labels[:, 1:] != -100).sum())
        for ids, attn, labels in zip(*(t.chunk(self.accum) for t in (self.batch.input_ids,
                                                                    self.batch.attention_mask, self.labels))):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.model(input_ids=ids, attention_mask=attn).logits
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(),
                                                     ignore_index=-100, reduction="sum") / total
            loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def trl_step_seconds(model_dir: str, batch: TrainBatch, accum: int, steps: int, warmup: int, bf16: bool):
    """Fastest TRL SFTTrainer optimizer step in seconds on the same rows (None if trl is not installed)."""
    try:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
        from trl import SFTConfig, SFTTrainer
    except ImportError:
        return None
    rows = [{"input_ids": ids[a.bool()].tolist(), "labels": ids.masked_fill(m == 0, -100)[a.bool()].tolist()}
            for ids, a, m in zip(batch.input_ids, batch.attention_mask, batch.loss_mask)]
    ends: list[float] = []

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        config = SFTConfig(output_dir=out, per_device_train_batch_size=len(rows) // accum, max_steps=warmup + steps,
                           gradient_accumulation_steps=accum, learning_rate=1e-4, max_grad_norm=1.0, bf16=bf16,
                           use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no",
                           disable_tqdm=True, lr_scheduler_type="constant", optim="adamw_torch", max_length=None,
                           dataloader_num_workers=0, gradient_checkpointing=False)
        trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=config,
                             train_dataset=Dataset.from_list(rows), callbacks=[Timer()],
                             processing_class=AutoTokenizer.from_pretrained(model_dir))
        trainer.train()
    return min(b - a for a, b in zip(ends[warmup - 1:], ends[warmup:]))


def model_dir_for(name: str) -> str:
    """A saved model directory with tokenizer: keye-tiny, or its Qwen3 twin (same decoder sizes)."""
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from keye_vl import KeyeVLConfig

    keye_dir = tempfile.mkdtemp(prefix="bench-keye-")
    init_model_dir(keye_dir, "keye-tiny")
    if name == "keye":
        return keye_dir
    text = KeyeVLConfig.from_preset("keye-tiny").text_config
    fields = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "pad_token_id",
              "eos_token_id", "bos_token_id")
    torch.manual_seed(0)
    twin = Qwen3ForCausalLM(Qwen3Config(**{f: getattr(text, f) for f in fields}, tie_word_embeddings=False))
    qwen_dir = tempfile.mkdtemp(prefix="bench-qwen3-")
    twin.save_pretrained(qwen_dir)
    AutoTokenizer.from_pretrained(keye_dir).save_pretrained(qwen_dir)
    return qwen_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("qwen3", "keye"), default="qwen3")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--min-len", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--accum", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast over fp32 master weights")
    parser.add_argument("--no-trl", action="store_true")
    args = parser.parse_args()
    model_dir = model_dir_for(args.model)
    config = transformers.AutoConfig.from_pretrained(model_dir)
    batch = make_batch(args.batch, args.min_len, args.max_len, getattr(config, "text_config", config).vocab_size)
    trl_seconds = None if args.no_trl or args.model == "keye" else \
        trl_step_seconds(model_dir, batch, args.accum, args.steps, args.warmup, args.bf16)
    precision = "bf16-autocast" if args.bf16 else "fp32"
    learners = {mode: Learner(LearnerConfig(model=model_dir, lr=1e-4, grad_accum_steps=args.accum, precision=precision,
                                            micro_batching=mode, pack_length=args.max_len))
                for mode in ("none", "bucket", "pack")}
    plain = TorchLoop(transformers.AutoModelForCausalLM.from_pretrained(model_dir), batch, args.accum, args.bf16)
    steps = {"torch": plain.step,
             **{f"learner-{m}": (lambda lr=lr: lr.train_step(batch)) for m, lr in learners.items()}}
    padding = {}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(args.warmup + args.steps):
        for name, step in steps.items():  # alternate so drift hits all contenders equally
            start = time.perf_counter()
            out = step()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
            if isinstance(out, dict):
                padding[name] = out["padding_fraction"]
    tokens = int(batch.attention_mask.sum())
    result = {name: tokens / min(t) for name, t in times.items()}
    if trl_seconds is not None:
        result["trl-sft"] = tokens / trl_seconds
    report(args, result, padding, tokens)


def report(args, result: dict[str, float], padding: dict[str, float], tokens: int) -> None:
    base = result["torch"]
    print(f"{'contender':<16}{'tokens/s':>12}{'vs torch':>10}{'padding':>10}")
    for name, tps in result.items():
        pad = f"{padding[name]:.3f}" if name in padding else "-"
        print(f"{name:<16}{tps:>12,.0f}{tps / base:>10.2f}{pad:>10}")
    overhead = result["learner-none"] / base
    print(f"learner(none)/torch = {overhead:.3f} (target >= 0.9) {'OK' if overhead >= 0.9 else 'MISSED'}")
    print(json.dumps({"bench": "learner", "model": args.model, "date": str(date.today()), "machine": platform.machine(),
                      "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "transformers": transformers.__version__, "batch": args.batch, "min_len": args.min_len,
                      "max_len": args.max_len, "accum": args.accum, "bf16": args.bf16, "real_tokens": tokens,
                      "tokens_per_s": result, "padding_fraction": padding, "ratio_none_vs_torch": overhead}))


if __name__ == "__main__":
    main()

"""GRPO head to head: TRL's `GRPOTrainer` vs `posttrain run` (Ray actors + DeepSpeed learner), same everything.

Both sides get the same Qwen3-style model directory (built from config, warm-started once by a short SFT on the
flawed-teacher arithmetic rows so the reward is neither 0 nor 1; cached under runs/bench/rl_vs_trl), the same
tiny tokenizer and chat template (prompt token ids checked equal), the same RL prompts (2-digit additions), the
same reward (math-verify through `rewards.load_reward("math")`; TRL gets it wrapped as a TRL reward function),
group size, prompts per step, completion length, sampling (T=1, no top-k/top-p), learning rate (constant, no
warmup), clipping (grad norm 1), loss (token-mean GRPO = TRL's `dapo`, beta 0, one update per batch),
precision (fp32, or each side's bf16 autocast with --bf16), seed and number of steps.
Each run is its own process; the runs alternate TRL / posttrain so load drift on the shared machine hits both,
and both run at nice 0 (Ray's default worker niceness is 15: see SCHEDULING).

Reported per side (medians over runs): seconds per step (median interval between consecutive step ends, which
excludes start-up and the first step), the generation and learner seconds inside it, samples/s, process wall
time including start-up, the mean training reward in quarters of the run, and greedy held-out accuracy of the
final model (one evaluator for both).
Departures: prompt order differs (each framework samples its own); TRL's sampler has no logprob bookkeeping
while posttrain's engine keeps them for off-policy losses; that cost is part of what is measured.
Usage: python -m bench.rl_vs_trl [--size tiny|mixed|large|both --runs 3 --steps N --rl-seed S --bf16
                                --posttrain-set K=V ...]
       (internal: --worker trl|posttrain --out DIR runs one side once from DIR/spec.json)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "runs" / "bench" / "rl_vs_trl"


@dataclass(frozen=True)
class Size:
    """One benchmark configuration: the model, its warm start, and the RL run both sides do."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    style: str  # cold_start_data arithmetic style: "compact" (short think) or "verbose" (long think)
    modes: tuple[str, ...]
    sft_rows: int
    sft_epochs: int
    sft_lr: float
    rl_lr: float
    steps: int
    max_tokens: int
    prompts_per_step: int = 8
    group_size: int = 8
    rl_prompts: int = 2000
    eval_prompts: int = 200  # held-out pairs per mode
    seed: int = 0  # the warm start's data and weights
    rl_seed: int = 0  # both sides' RL (TRL's `seed`, the recipe's `seed`): one warm start, several RL runs
    precision: str = "fp32"  # or "bf16": each side's bf16 autocast (fp32 master weights) in generation and training

    def key(self) -> str:
        """Cache key of the warm-started model and data (the RL settings do not change them)."""
        fixed = {k: v for k, v in asdict(self).items() if k not in RL_FIELDS}
        return f"{self.name}-{hashlib.sha1(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:8]}"


# Ray starts its workers at nice 15, so on a shared machine posttrain's actors lose every contest for the cores
# against the TRL process (nice 0) and anyone else's jobs; both sides run at nice 0 here (README: results).
SCHEDULING = {"RAY_worker_niceness": os.environ.get("RAY_worker_niceness", "0")}

RL_FIELDS = ("rl_seed", "rl_lr", "steps", "max_tokens", "prompts_per_step", "group_size", "precision")


SIZES = {
    # keye-tiny's decoder as a Qwen3 (~1M parameters), the tiny recipe's 48-token budget and both modes
    "tiny": Size("tiny", 128, 384, 4, 4, 2, 32, "compact", ("think", "no_think"), sft_rows=4000, sft_epochs=4,
                 sft_lr=1e-3, rl_lr=2e-4, steps=60, max_tokens=48),
    # ~26M parameters, verbose think responses (~60-80 tokens) in a 128-token budget: compute dominates
    "large": Size("large", 512, 1536, 8, 8, 4, 64, "verbose", ("think",), sft_rows=2400, sft_epochs=1,
                  sft_lr=5e-4, rl_lr=2e-5, steps=8, max_tokens=128, eval_prompts=100),
    # the large model in Keye's mixed mode: verbose think answers and bare no_think ones in every batch
    "mixed": Size("mixed", 512, 1536, 8, 8, 4, 64, "verbose", ("think", "no_think"), sft_rows=2400, sft_epochs=1,
                  sft_lr=5e-4, rl_lr=2e-5, steps=8, max_tokens=128, eval_prompts=100),
}
BOTH = ("tiny", "large")
# posttrain/TRL throughput at posttrain's defaults (issue 39: tiny and mixed; issue 17: large)
TARGETS = {"tiny": 1.3, "mixed": 1.3, "large": 1.5}


# ---------------------------------------------------------------------------------------------- shared setup
def tokenizer():
    from keye_protocol import chat
    from keye_vl.tokenizer import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    tok.chat_template = chat.CHAT_TEMPLATE  # TRL renders prompts with it; equal to posttrain's encoding (checked)
    return tok


def prompt_text(row: dict) -> str:
    """The user turn with its mode suffix, as a plain string (what TRL's chat template renders)."""
    from keye_protocol.chat import with_mode

    return with_mode([{"role": "user", "content": row["prompt"]}], row["mode"])[0]["content"][0]["text"]


def prepare(size: Size) -> Path:
    """The cached directory of a size: warm-started model, prompts.jsonl, eval.jsonl (built once)."""
    out = CACHE / size.key()
    if (out / "done").exists():
        return out
    from cold_start_data.arithmetic_sft import arithmetic_sft_rows

    out.mkdir(parents=True, exist_ok=True)
    split = arithmetic_sft_rows(size.sft_rows + size.rl_prompts, seed=size.seed, carry_drop_rate=0.6,
                                modes=size.modes, n_eval=size.eval_prompts, style=size.style)
    sft = split.train[: size.sft_rows]
    keys = ("prompt", "answer", "mode")
    prompts = [{"id": f"rl{i}", **{k: r[k] for k in keys}} for i, r in enumerate(split.train[size.sft_rows:])]
    held_out = [{"id": f"eval{i}", **{k: r[k] for k in keys}} for i, r in enumerate(split.eval)]
    write_jsonl(out / "prompts.jsonl", prompts)
    write_jsonl(out / "eval.jsonl", held_out)
    tok = tokenizer()
    model = build_model(size, tok)
    check_prompt_ids(tok, prompts[0])
    seconds = warm_start(model, tok, sft, size)
    model.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    params = sum(p.numel() for p in model.parameters())
    (out / "info.json").write_text(json.dumps({"parameters": params, "sft_seconds": seconds, **asdict(size)}))
    (out / "done").write_text("")
    return out


def build_model(size: Size, tok):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(size.seed)
    config = Qwen3Config(vocab_size=len(tok), hidden_size=size.hidden, intermediate_size=size.intermediate,
                         num_hidden_layers=size.layers, num_attention_heads=size.heads,
                         num_key_value_heads=size.kv_heads, head_dim=size.head_dim, max_position_embeddings=1024,
                         tie_word_embeddings=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.pad_token_id)
    model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model


def check_prompt_ids(tok, row: dict) -> None:
    """TRL (chat template on a string turn) and posttrain (PromptEncoder) must feed the model the same ids."""
    from posttrain.prompts import request_of
    from rollout.encoding import PromptEncoder

    ours = PromptEncoder(tok).encode(request_of(row)).input_ids
    trl = tok.apply_chat_template([{"role": "user", "content": prompt_text(row)}], add_generation_prompt=True,
                                  tokenize=True, return_dict=True)["input_ids"]
    if list(trl) != ours:
        raise AssertionError(f"prompt ids differ: TRL {list(trl)} vs posttrain {ours}")


def warm_start(model, tok, rows: list[dict], size: Size, batch: int = 32) -> float:
    """Plain SFT (loss on the response and its <|im_end|>), bf16 autocast when the CPU has it; returns seconds."""
    from posttrain.learners.engine_setup import cpu_has_bf16

    sequences = []
    for row in rows:
        prompt, response = row["messages"]
        ids = tok.apply_chat_template([prompt], add_generation_prompt=True, tokenize=True,
                                      return_dict=True)["input_ids"]
        reply = tok.encode(response["content"], add_special_tokens=False) + [tok.eos_token_id]
        sequences.append((list(ids), reply))
    opt = torch.optim.AdamW(model.parameters(), lr=size.sft_lr)
    g = torch.Generator().manual_seed(size.seed)
    start, bf16 = time.perf_counter(), cpu_has_bf16()
    model.train()
    for epoch in range(size.sft_epochs):
        order = torch.randperm(len(sequences), generator=g).tolist()
        for first in range(0, len(order) - batch + 1, batch):
            ids, labels, attn = pad_sft([sequences[i] for i in order[first:first + batch]], tok.pad_token_id)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        print(f"warm start {size.name}: epoch {epoch + 1}/{size.sft_epochs} loss {loss.item():.3f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    return time.perf_counter() - start


def pad_sft(pairs, pad_id: int):
    longest = max(len(p) + len(r) for p, r in pairs)
    ids = torch.full((len(pairs), longest), pad_id, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    attn = torch.zeros_like(ids)
    for b, (p, r) in enumerate(pairs):
        ids[b, :len(p) + len(r)] = torch.tensor(p + r)
        labels[b, len(p):len(p) + len(r)] = torch.tensor(r)
        attn[b, :len(p) + len(r)] = 1
    return ids, labels, attn


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def math_scores(prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
    """The math reward both sides use (rewards.load_reward("math"), math-verify underneath)."""
    from rewards import Sample, load_reward

    reward = load_reward("math")
    samples = [Sample(prompt=p, completion=c, ground_truth=a) for p, c, a in zip(prompts, completions, answers)]
    return [float(v) for v in reward(samples)]


def evaluate(model_dir: Path, rows: list[dict], max_tokens: int, batch: int = 100) -> dict[str, float]:
    """Greedy held-out accuracy per mode of a saved model (the same evaluator for both sides)."""
    from transformers import AutoModelForCausalLM

    tok = tokenizer()
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    texts, outputs = [prompt_text(r) for r in rows], []
    for first in range(0, len(rows), batch):
        chunk = [tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                         tokenize=False) for t in texts[first:first + batch]]
        enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)
        outputs += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    scores = math_scores(texts, outputs, [r["answer"] for r in rows])
    by_mode: dict[str, list[float]] = {}
    for row, score in zip(rows, scores):
        by_mode.setdefault(row["mode"], []).append(score)
    return {mode: sum(v) / len(v) for mode, v in by_mode.items()}


# ---------------------------------------------------------------------------------------------- side (a): TRL
def trl_math_reward(prompts, completions, answer, **_) -> list[float]:
    """TRL reward function (conversational form) around the math reward.

    >>> trl_math_reward([[{"role": "user", "content": "What is 1 + 1? /no_think"}]],
    ...                 [[{"role": "assistant", "content": "\\\\boxed{2}"}]], ["2"])
    [1.0]
    """
    return math_scores([p[-1]["content"] for p in prompts], [c[-1]["content"] for c in completions], answer)


def run_trl(spec: dict, out: Path) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(2)
    size, data = Size(**{**spec["size"], "modes": tuple(spec["size"]["modes"])}), Path(spec["data"])
    rows = [{"prompt": [{"role": "user", "content": prompt_text(r)}], "answer": r["answer"]}
            for r in read_jsonl(data / "prompts.jsonl")]
    ends, rewards, lengths = [], [], []

    class Recorder(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:
                rewards.append(logs["reward"])
                lengths.append(logs.get("completions/mean_length"))

    config = GRPOConfig(
        output_dir=str(out / "trl"), per_device_train_batch_size=size.prompts_per_step * size.group_size,
        num_generations=size.group_size, gradient_accumulation_steps=1, max_completion_length=size.max_tokens,
        learning_rate=size.rl_lr, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, beta=0.0,
        loss_type="dapo", scale_rewards="group", num_iterations=1, temperature=1.0, top_p=1.0, top_k=0,
        max_steps=size.steps, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
        bf16=size.precision == "bf16", gradient_checkpointing=False, optim="adamw_torch", seed=size.rl_seed,
        disable_tqdm=True, dataloader_num_workers=0, log_completions=False)
    model_dir = str(data / "model")
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=config,
                          reward_funcs=trl_math_reward, train_dataset=Dataset.from_list(rows),
                          processing_class=AutoTokenizer.from_pretrained(model_dir), callbacks=[Recorder()])
    phases = {"generate": timed_method(trainer, "_generate_single_turn"),
              "generate_and_score": timed_method(trainer, "_generate_and_score_completions")}
    trainer.train()
    trainer.save_model(str(out / "model"))
    # TRL's learner time: the step minus generation, scoring and advantages (what remains is forward/backward/step)
    phases["train"] = [0.0] + [b - a - s for a, b, s in zip(ends, ends[1:], phases["generate_and_score"][1:])]
    write_result(out, ends, rewards, lengths, phases)


def timed_method(obj, name: str) -> list[float]:
    """Wrap obj.name so that each call's seconds are appended to the returned list."""
    seconds, method = [], getattr(obj, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    setattr(obj, name, timed)
    return seconds


def write_result(out: Path, ends: list[float], rewards: list[float], lengths: list, phases: dict) -> None:
    """Step intervals (end to end, so the first step and start-up are excluded), the curves, phase seconds."""
    intervals = [b - a for a, b in zip(ends, ends[1:])]
    (out / "result.json").write_text(json.dumps({"intervals": intervals, "rewards": rewards, "lengths": lengths,
                                                 "phases": {k: v[1:] for k, v in phases.items()}}))


# ---------------------------------------------------------------------------------------------- side (b): posttrain
def recipe_yaml(size: Size, data: Path, runs_dir: Path, trace: bool = True) -> str:
    """An `rl`-only recipe on the cached model and prompt file (`data.kind: files`)."""
    bf16 = size.precision == "bf16"
    recipe = {
        "name": f"bench-{size.name}", "seed": size.rl_seed, "runs_dir": str(runs_dir),
        "model": {"path": str(data / "model")},
        "data": {"kind": "files", "prompts": str(data / "prompts.jsonl")},
        "rollout": {"num_workers": 1, "cpus_per_worker": 0.5, "threads": 2, "bf16_autocast": bf16,
                    "max_batch_size": size.prompts_per_step * size.group_size,
                    "sampling": {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_tokens": size.max_tokens}},
        "reward": {"components": [{"spec": "math", "weight": 1.0}], "num_workers": 1, "cpus_per_worker": 0.25},
        "learner": {"precision": "bf16-autocast" if bf16 else "fp32", "grad_clip": 1.0, "schedule": "constant",
                    "warmup_steps": 0},
        "cluster": {"num_cpus": 2, "num_learners": 1, "cpus_per_learner": 0.5, "learner_threads": 2},
        "trace": {"enabled": trace, "tensorboard": trace},
        "stages": [{"kind": "rl", "steps": size.steps, "prompts_per_step": size.prompts_per_step,
                    "group_size": size.group_size, "checkpoint_every": size.steps,
                    "learner": {"lr": size.rl_lr, "loss": {"name": "grpo", "args": {"aggregation": "token-mean"}}}}],
    }
    import yaml

    return yaml.safe_dump(recipe, sort_keys=False)


def run_posttrain(spec: dict, out: Path) -> None:
    """`posttrain run` on the generated recipe, with a timestamp at the end of every RL step."""
    from posttrain import cli
    from posttrain.stages import rl

    size, data = Size(**{**spec["size"], "modes": tuple(spec["size"]["modes"])}), Path(spec["data"])
    recipe = out / "recipe.yaml"
    recipe.write_text(recipe_yaml(size, data, out / "runs"))
    ends: list[float] = []
    step = rl.RlLoop.step

    def timed_step(self, index):
        metrics = step(self, index)
        ends.append(time.perf_counter())
        return metrics

    rl.RlLoop.step = timed_step
    if cli.main(["run", str(recipe), *spec.get("overrides", [])]) != 0:
        raise SystemExit("posttrain run failed")
    stage = out / "runs" / f"bench-{size.name}" / "00-rl"
    metrics = [r for r in read_jsonl(stage / "metrics.jsonl") if "reward/mean" in r]
    (out / "model").symlink_to(stage / "model")
    phases = {p: [m.get(f"timing/{p}_s", 0.0) for m in metrics] for p in ("generate", "reward", "train", "sync")}
    # the rollout worker's own generation seconds: with `pipeline: one_step_off_policy` most of it runs during
    # training, and `generate_wait` is the part the step still waits for
    phases["generate"] = [m["rollout/worker_s"] for m in metrics]
    phases["generate_wait"] = [m.get("timing/generate_wait_s", 0.0) for m in metrics]
    write_result(out, ends, [m["reward/mean"] for m in metrics], [m["rollout/length_mean"] for m in metrics], phases)
    (out / "settings.json").write_text(json.dumps(settings_in_force(stage, metrics)))


def settings_in_force(stage: Path, metrics: list[dict]) -> dict:
    """What the posttrain side ran with, `auto` resolved: the recipe as run (overrides applied), the engine the
    stage chose (its settings.json) and the share of steps whose micro-batches were packed."""
    import yaml

    recipe = yaml.safe_load((stage.parent / "recipe.yaml").read_text())
    chosen = json.loads((stage / "settings.json").read_text()).get("auto", {}).get("rollout.engine", {})
    packed = statistics.mean(m.get("train/packed_fraction", 0.0) for m in metrics)
    return {"engine": chosen.get("chosen", recipe["rollout"]["engine"]),
            "micro_batching": recipe["learner"]["micro_batching"], "packed_steps": round(packed, 2),
            "pipeline": recipe["stages"][0]["pipeline"], "weight_sync": recipe["rollout"]["weight_sync"],
            "threads": f"rollout {recipe['rollout']['threads']} + learner {recipe['cluster']['learner_threads']}"}


# ---------------------------------------------------------------------------------------------- the comparison
@dataclass
class RunResult:
    side: str
    wall_s: float
    step_s: float
    rewards: list[float]
    lengths: list
    accuracy: dict[str, float]
    load: float
    phases: dict = field(default_factory=dict)  # median seconds per step of generate / train (/ reward, sync)
    settings: dict = field(default_factory=dict)  # posttrain: what its auto settings resolved to


def run_side(side: str, size: Size, data: Path, index: int, overrides: list[str], quiet_load: float) -> RunResult:
    out = CACHE / "runs" / f"{size.name}-{side}-{index}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "spec.json").write_text(json.dumps({"size": asdict(size), "data": str(data), "overrides": overrides}))
    env = {**os.environ, "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false", **SCHEDULING}
    wait_quiet(quiet_load)
    start, load = time.perf_counter(), 0.0
    with open(out / "log.txt", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bench.rl_vs_trl", "--worker", side, "--out", str(out)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:  # the run's own threads add ~2 to the load; more is someone else's
            load = max(load, os.getloadavg()[0])
            time.sleep(2.0)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{side} run failed; see {out / 'log.txt'}")
    result = json.loads((out / "result.json").read_text())
    accuracy = evaluate(out / "model", read_jsonl(data / "eval.jsonl"), size.max_tokens)
    step_s = statistics.median(result["intervals"])
    print(f"  {side:<9} run {index}: {step_s:.3f} s/step, wall {wall:.0f} s, reward "
          f"{quarters(result['rewards'])}, held-out {fmt_acc(accuracy)}, max load {load:.1f}", flush=True)
    phases = {k: statistics.median(v) for k, v in result["phases"].items() if v}
    settings = json.loads((out / "settings.json").read_text()) if (out / "settings.json").exists() else {}
    if settings:
        print(f"  {side:<9} ran with {settings}", flush=True)
    return RunResult(side, wall, step_s, result["rewards"], result["lengths"], accuracy, load, phases, settings)


def wait_quiet(max_load: float, max_wait_s: float = 600.0) -> None:
    """Start a run only once the 1-minute load is below `max_load` (other jobs share this machine)."""
    deadline = time.monotonic() + max_wait_s
    while max_load > 0 and os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        time.sleep(10.0)


def quarters(values: list[float]) -> str:
    n = len(values)
    parts = [values[i * n // 4:(i + 1) * n // 4] for i in range(4)]
    return " ".join(f"{sum(p) / len(p):.2f}" for p in parts if p)


def fmt_acc(accuracy: dict[str, float]) -> str:
    return " ".join(f"{m} {100 * a:.1f}%" for m, a in sorted(accuracy.items()))


def compare(size: Size, runs: int, overrides: list[str], quiet_load: float) -> dict:
    data = prepare(size)
    info = json.loads((data / "info.json").read_text())
    before = evaluate(data / "model", read_jsonl(data / "eval.jsonl"), size.max_tokens)
    print(f"{size.name}: {info['parameters'] / 1e6:.1f}M parameters, {size.prompts_per_step} prompts x "
          f"{size.group_size} samples, {size.max_tokens} tokens, {size.steps} steps, lr {size.rl_lr}, "
          f"{size.precision}; held-out before RL: {fmt_acc(before)}", flush=True)
    results: dict[str, list[RunResult]] = {"trl": [], "posttrain": []}
    for i in range(runs):
        order = ("trl", "posttrain") if i % 2 == 0 else ("posttrain", "trl")
        for side in order:
            results[side].append(run_side(side, size, data, i, overrides, quiet_load))
    return {**summarize(size, info, before, results), "posttrain_overrides": overrides}


def summarize(size: Size, info: dict, before: dict, results: dict[str, list[RunResult]]) -> dict:
    samples = size.prompts_per_step * size.group_size
    out = {"size": size.name, "rl_seed": size.rl_seed, "precision": size.precision, "parameters": info["parameters"], "steps": size.steps,
           "samples_per_step": samples, "max_tokens": size.max_tokens, "accuracy_before": before, "sides": {}}
    for side, runs in results.items():
        step_s = statistics.median(r.step_s for r in runs)
        curve = [statistics.mean(r.rewards[i] for r in runs) for i in range(min(len(r.rewards) for r in runs))]
        accuracy = {m: statistics.median(r.accuracy[m] for r in runs) for m in runs[0].accuracy}
        out["sides"][side] = {"step_s": step_s, "samples_per_s": samples / step_s,
                              "wall_s": statistics.median(r.wall_s for r in runs), "reward_quarters": quarters(curve),
                              "reward_last_quarter": statistics.mean(curve[-max(1, len(curve) // 4):]),
                              "accuracy_after": accuracy, "runs_step_s": [r.step_s for r in runs],
                              "generate_s": statistics.median(r.phases["generate"] for r in runs),
                              "train_s": statistics.median(r.phases["train"] for r in runs),
                              "sync_s": statistics.median(r.phases.get("sync", 0.0) for r in runs),
                              "best_step_s": min(r.step_s for r in runs), "runs_max_load": [r.load for r in runs],
                              "settings": runs[-1].settings}
    a, b = out["sides"]["trl"], out["sides"]["posttrain"]
    out["throughput_ratio"] = a["step_s"] / b["step_s"]
    out["best_run_ratio"] = a["best_step_s"] / b["best_step_s"]  # least-disturbed run of each side
    return out


def report(summaries: list[dict], runs: int) -> None:
    print(f"\n{'size':<7}{'side':<11}{'s/step':>8}{'gen s':>7}{'train s':>8}{'sync s':>7}{'samples/s':>11}"
          f"{'wall s':>8}  "
          f"{'reward by quarter':<24}{'held-out after'}")
    for s in summaries:
        for side, v in s["sides"].items():
            print(f"{s['size']:<7}{side:<11}{v['step_s']:>8.3f}{v['generate_s']:>7.2f}{v['train_s']:>8.2f}"
                  f"{v['sync_s']:>7.3f}{v['samples_per_s']:>11.1f}{v['wall_s']:>8.0f}  "
                  f"{v['reward_quarters']:<24}{fmt_acc(v['accuracy_after'])}")
        target = TARGETS[s["size"]]
        verdict = "OK" if s["throughput_ratio"] >= target else "MISSED"
        print(f"{s['size']} ({s['precision']}): posttrain/TRL throughput {s['throughput_ratio']:.2f}x median of runs, "
              f"{s['best_run_ratio']:.2f}x best runs (target >= {target}) {verdict}; held-out before RL "
              f"{fmt_acc(s['accuracy_before'])}")
    import transformers
    import trl

    print(json.dumps({"bench": "rl_vs_trl", "date": str(date.today()), "machine": platform.machine(),
                      "cpus": os.cpu_count(), "torch": torch.__version__, "transformers": transformers.__version__,
                      "trl": trl.__version__, "runs": runs, "results": summaries}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=(*SIZES, "both"), default="both")
    parser.add_argument("--runs", type=int, default=3, help="runs per side (alternating)")
    parser.add_argument("--steps", type=int, help="override the size's number of RL steps")
    parser.add_argument("--rl-seed", type=int, default=0, help="both sides' RL seed (the warm start keeps its own)")
    parser.add_argument("--bf16", action="store_true", help="both sides in bf16 autocast (fp32 master weights)")
    parser.add_argument("--posttrain-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="recipe overrides for the posttrain side only (e.g. learner.grad_accum_steps=4)")
    parser.add_argument("--quiet-load", type=float, default=1.0,
                        help="wait (up to 10 min) for the 1-minute load to drop below this before each run; 0: no wait")
    parser.add_argument("--worker", choices=("trl", "posttrain"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads((args.out / "spec.json").read_text())
        (run_trl if args.worker == "trl" else run_posttrain)(spec, args.out)
        return
    torch.set_num_threads(2)
    names = list(BOTH) if args.size == "both" else [args.size]
    summaries = []
    for name in names:
        size = SIZES[name]
        size = replace(size, steps=args.steps or size.steps, precision="bf16" if args.bf16 else "fp32",
                       rl_seed=args.rl_seed)
        summaries.append(compare(size, args.runs, args.posttrain_set, args.quiet_load))
    report(summaries, args.runs)


if __name__ == "__main__":
    main()

"""Where one posttrain RL step spends its wall time, against a bare torch loop doing the same work.

posttrain side: the `rl` stage of the same recipe `bench.rl_vs_trl` generates (cached warm-started Qwen3, math
reward, P prompts x G samples), driven step by step in this process exactly as `RlLoop.run` does, on its Ray
actors (rollout worker, reward worker, DeepSpeed learner). Each step's wall time is split by the loop's own
`timing/<phase>_s` metrics into generation, reward, learner (train), weight sync and everything else (prompt
sampling, advantages, the log phase: traces, metrics, TensorBoard). Inside the phases, the engine's own
`generate` time (stamped on the completions) and the learner's own `train/time_s` separate compute from
Ray calls, serialisation and batch building.
Bare side: one process, the same model directory and the same prompts per step: `model.generate` (sampling,
no logprob bookkeeping), the math reward in-process, group advantages, one GRPO step (token-mean policy
gradient, ratio 1, AdamW, grad-norm clip 1.0) - the compute floor. Steps alternate posttrain / bare, so load
drift on the shared machine hits both; the first `--warmup` steps are dropped and medians reported.
Target: the "everything else" share of a posttrain step <= 10%.
Usage: python -m bench.overhead [--size tiny|large --steps 14 --warmup 2 --bf16 --posttrain-set K=V ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from dataclasses import asdict, replace
from datetime import date

import torch

from bench.rl_vs_trl import CACHE, SCHEDULING, SIZES, prepare, prompt_text, read_jsonl, recipe_yaml, tokenizer

PHASES = ("generate", "reward", "train", "sync")


class BareLoop:
    """The same generation and update with nothing around them: the floor a step can approach."""

    def __init__(self, model_dir, size):
        from transformers import AutoModelForCausalLM

        from rewards import load_reward

        self.size, self.tok = size, tokenizer()
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=size.rl_lr)
        self.reward = load_reward("math")
        self.bf16 = size.precision == "bf16"  # autocast over fp32 weights, as both benchmarked sides do

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)

    def step(self, rows: list[dict]) -> dict[str, float]:
        from rewards import Sample

        t: dict[str, float] = {}
        start = time.perf_counter()
        g, eos, pad = self.size.group_size, self.tok.eos_token_id, self.tok.pad_token_id
        prompts = [self.tok.apply_chat_template([{"role": "user", "content": prompt_text(r)}],
                                                add_generation_prompt=True, tokenize=True, return_dict=True)
                   ["input_ids"] for r in rows for _ in range(g)]
        ids, attn = left_pad(prompts, pad)
        t["other"] = time.perf_counter() - start
        with phase(t, "generate"), torch.no_grad(), self.autocast():
            self.model.eval()
            out = self.model.generate(input_ids=ids, attention_mask=attn, do_sample=True, temperature=1.0,
                                      top_p=1.0, top_k=None, max_new_tokens=self.size.max_tokens,
                                      eos_token_id=eos, pad_token_id=pad)
        with phase(t, "other"):
            completions = [cut_at_eos(row.tolist(), eos) for row in out[:, ids.shape[1]:]]
            texts = self.tok.batch_decode(completions, skip_special_tokens=True)
        with phase(t, "reward"):
            samples = [Sample(prompt=prompt_text(rows[i // g]), completion=c, ground_truth=rows[i // g]["answer"])
                       for i, c in enumerate(texts)]
            rewards = torch.tensor([float(v) for v in self.reward(samples)])
        with phase(t, "other"):
            from posttrain.losses import group_advantages

            advantages = group_advantages(rewards, g)
        with phase(t, "train"):
            self.grpo_step(prompts, completions, advantages)
        t["tokens"] = float(sum(len(c) for c in completions))
        t["wall"] = time.perf_counter() - start
        return t

    def grpo_step(self, prompts, completions, advantages) -> None:
        """Token-mean policy gradient with ratio exp(logp - logp.detach()) = 1, as one update per batch."""
        seqs = [p + c for p, c in zip(prompts, completions)]
        longest = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), longest), self.tok.pad_token_id, dtype=torch.long)
        attn, mask = torch.zeros_like(ids), torch.zeros(len(seqs), longest)
        for b, (p, s) in enumerate(zip(prompts, seqs)):
            ids[b, :len(s)], attn[b, :len(s)], mask[b, len(p):len(s)] = torch.tensor(s), 1, 1.0
        self.model.train()
        with self.autocast():
            logits = self.model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()  # [B, L-1, V]
        logp = logits.log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # [B, L-1]
        ratio = torch.exp(logp - logp.detach())
        m = mask[:, 1:]
        loss = -(advantages[:, None].float() * ratio * m).sum() / m.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


class phase:
    """Adds the block's seconds to t[name]."""

    def __init__(self, t: dict, name: str):
        self.t, self.name = t, name

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.t[self.name] = self.t.get(self.name, 0.0) + time.perf_counter() - self.start


def left_pad(prompts: list[list[int]], pad: int):
    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), longest), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, longest - len(p):], attn[b, longest - len(p):] = torch.tensor(p), 1
    return ids, attn


def cut_at_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[:tokens.index(eos) + 1] if eos in tokens else tokens


# ---------------------------------------------------------------------------------------------- posttrain side
def load_bench_recipe(size, data, out, overrides: list[str]):
    from posttrain.recipe_checks import load_recipe

    (out / "recipe.yaml").write_text(recipe_yaml(size, data, out / "runs"))
    return load_recipe(out / "recipe.yaml", overrides)


def start_loop(recipe):
    """The rl stage's loop on the running Ray cluster, set up as `posttrain.runner.run_recipe` does; also
    returns a dict that holds each step's completions (they carry the engine's own timings)."""
    from rich.console import Console

    from posttrain.cluster import check_fits
    from posttrain.data import prepare_data, prepare_model
    from posttrain.stages.context import StageContext
    from posttrain.stages.rl import RlLoop

    check_fits(recipe)
    console = Console(quiet=True)
    model, data_dir = prepare_model(recipe, console), prepare_data(recipe, console)
    stage_dir = recipe.stage_dirs()[0]
    stage_dir.mkdir(parents=True, exist_ok=True)
    loop = RlLoop(StageContext(recipe, 0, recipe.stages[0], stage_dir, model, data_dir, console))
    captured: dict[str, list] = {}
    generate = loop.generate

    def capturing(rows, *args, **kwargs):
        captured["completions"] = generate(rows, *args, **kwargs)
        return captured["completions"]

    loop.generate = capturing
    return loop, captured


def posttrain_step(loop, captured, step: int) -> dict[str, float]:
    start = time.perf_counter()
    metrics = loop.step(step)
    wall = time.perf_counter() - start
    completions = captured["completions"]
    engine = sum({c.timings.get("generate_s", 0.0) for c in completions})  # one value per engine batch
    worker = max(c.timings.get("worker_s", 0.0) for c in completions)
    t = {p: metrics.get(f"timing/{p}_s", 0.0) for p in PHASES}
    t.update(wall=wall, other=wall - sum(t.values()), engine=engine, worker=worker,
             learner=metrics.get("train/time_s", 0.0), tokens=float(sum(c.num_tokens for c in completions)),
             log=wall - sum(v for k, v in metrics.items() if k.startswith("timing/")))
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=tuple(SIZES), default="tiny")
    parser.add_argument("--steps", type=int, default=14)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 master weights) on both sides")
    parser.add_argument("--posttrain-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="recipe overrides for the posttrain side (e.g. learner.grad_accum_steps=4)")
    args = parser.parse_args()
    os.environ.update(SCHEDULING)  # the actors at the driver's priority, like the bare loop (see bench.rl_vs_trl)
    torch.set_num_threads(2)
    size = replace(SIZES[args.size], steps=args.steps, precision="bf16" if args.bf16 else "fp32")
    data = prepare(size)
    out = CACHE / "overhead" / size.name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    from posttrain.cluster import ray_cluster

    recipe = load_bench_recipe(size, data, out, args.posttrain_set)
    bare_loop = BareLoop(data / "model", size)
    post, bare, load = [], [], []
    with ray_cluster(recipe):
        loop, captured = start_loop(recipe)
        try:
            loop.sync_weights(0)
            for step in range(args.steps):
                rows = loop.sampler.draw(step, size.prompts_per_step)
                sides = [("posttrain", lambda: posttrain_step(loop, captured, step)),
                         ("bare", lambda: bare_loop.step(rows))]
                for name, run in (sides if step % 2 == 0 else sides[::-1]):
                    (post if name == "posttrain" else bare).append(run())
                load.append(os.getloadavg()[0])
                print(f"step {step}: posttrain {post[-1]['wall']:.3f} s, bare {bare[-1]['wall']:.3f} s, "
                      f"load {load[-1]:.1f}", flush=True)
        finally:
            loop.close()
    (out / "steps.json").write_text(json.dumps({"posttrain": post, "bare": bare, "load": load}))
    report(size, post[args.warmup:], bare[args.warmup:], load)


def median_of(rows: list[dict], key: str) -> float:
    return statistics.median(r.get(key, 0.0) for r in rows)


def median_share(rows: list[dict], part) -> float:
    """Median over steps of part(step) / step wall: robust to a disturbed step, unlike a ratio of medians."""
    return statistics.median(part(r) / r["wall"] for r in rows)


def report(size, post: list[dict], bare: list[dict], load: list[float]) -> None:
    p = {k: median_of(post, k) for k in (*PHASES, "other", "wall", "engine", "worker", "learner", "tokens", "log")}
    b = {k: median_of(bare, k) for k in ("generate", "reward", "train", "other", "wall", "tokens")}
    for row in bare:
        row["sync"] = 0.0
    b["sync"] = 0.0
    labels = {"generate": "generation", "reward": "reward", "train": "learner (train)", "sync": "weight sync",
              "other": "everything else"}
    print(f"\n{size.name} ({size.precision}): {size.prompts_per_step} prompts x {size.group_size} samples, "
          f"<= {size.max_tokens} tokens; medians of {len(post)} steps (shares: median of per-step shares)")
    print(f"{'phase':<18}{'posttrain s':>12}{'share':>8}{'bare s':>10}{'share':>8}")
    shares = {k: (median_share(post, lambda r, k=k: r[k]), median_share(bare, lambda r, k=k: r[k]))
              for k in (*PHASES, "other")}
    for k in (*PHASES, "other"):
        print(f"{labels[k]:<18}{p[k]:>12.3f}{shares[k][0]:>8.1%}{b[k]:>10.3f}{shares[k][1]:>8.1%}")
    print(f"{'step':<18}{p['wall']:>12.3f}{'':>8}{b['wall']:>10.3f}")
    print(f"tokens generated per step: posttrain {p['tokens']:.0f}, bare {b['tokens']:.0f}")
    inside = {"generation: engine generate": p["engine"], "generation: Ray call + (de)serialisation":
              p["generate"] - p["worker"], "learner: DeepSpeed train_step": p["learner"],
              "learner: batch build + Ray call": p["train"] - p["learner"], "log phase (traces, metrics)": p["log"]}
    for name, value in inside.items():
        print(f"  {name:<42}{value:>8.3f} s")
    share = shares["other"][0]
    orchestration = median_share(post, lambda r: r["wall"] - r["engine"] - r["learner"] - r["reward"])
    ratio = statistics.median(a["wall"] / z["wall"] for a, z in zip(post, bare))  # paired: adjacent in time
    print(f"everything-else share {share:.1%} (target <= 10%) {'OK' if share <= 0.10 else 'MISSED'}; "
          f"posttrain step / bare step {ratio:.2f} (median of paired steps); outside engine, learner and "
          f"reward compute: {orchestration:.1%} of the step")
    import transformers

    print(json.dumps({"bench": "overhead", "date": str(date.today()), "machine": platform.machine(),
                      "cpus": os.cpu_count(), "torch": torch.__version__, "transformers": transformers.__version__,
                      "size": asdict(size), "steps_measured": len(post), "posttrain": p, "bare": b,
                      "shares": shares, "everything_else_share": share, "orchestration_share": orchestration,
                      "step_ratio_vs_bare": ratio, "load_max": max(load), "load_median": statistics.median(load)}))


if __name__ == "__main__":
    main()

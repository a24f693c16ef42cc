"""The real CLI on a tiny recipe: Ray + DeepSpeed learners + rollout and reward workers + math-verify."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

RECIPE = """
name: e2e
runs_dir: {runs}
data: {{kind: arithmetic, sft_rows: 128, rl_prompts: 64, eval_prompts: 16, modes: [think, no_think]}}
rollout:
  # the default engine (auto: compact for this size) through Ray workers; test_keye_recipe.py runs transformers
  sampling: {{temperature: 1.0, top_p: 1.0, top_k: 0, max_tokens: 24}}
  eval_sampling: {{temperature: 0.0, max_tokens: 24}}
reward: {{components: [{{spec: math}}, {{spec: format, weight: 0.1}}]}}
learner: {{precision: fp32}}
stages:
  - {{kind: sft, epochs: 1, batch_size: 32, learner: {{lr: 1.0e-3, loss: {{name: sft}}}}}}
  - {{kind: rl, steps: {steps}, prompts_per_step: 2, group_size: 4, checkpoint_every: 2, eval_every: 2,
      hints: true, pass_rate_filter: true, learner: {{lr: 1.0e-4, loss: {{name: grpo}}}}}}
"""


def write_recipe(tmp_path: Path, steps: int) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(runs=tmp_path / "runs", steps=steps))
    return path


def posttrain(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "posttrain.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def trace_steps(stage_dir: Path) -> Counter:
    path = stage_dir / "traces.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(json.loads(line)["step"] for line in lines if line.strip())


def run_finished(root, fixture):
    """One uninterrupted 3-step run: checked by test_recipe_end_to_end; its init model, data and SFT stage are
    where the kill -9 test's run starts (SFT is not what that test kills)."""
    return [["run", str(write_recipe(root, steps=3))]]


def run_pipelined(root, fixture):
    recipe = root / "recipe.yaml"
    recipe.write_text(PIPELINED.format(runs=root / "runs"))
    return [["run", str(recipe)]]


RUNS = {"finished": run_finished, "pipelined": run_pipelined}  # run two at a time in test order (tests/e2e/conftest.py)


@pytest.mark.cli_run("finished")
def test_recipe_end_to_end(cli_run):
    [process] = cli_run.results
    assert process.returncode == 0, process.stdout + process.stderr
    recipe, run = cli_run.root / "recipe.yaml", cli_run.root / "runs" / "e2e"
    sft, rl = run / "00-sft", run / "01-rl"
    for stage in (sft, rl):
        assert (stage / "done.json").exists() and (stage / "model" / "config.json").exists()
    before = load_file(run / "init-model" / "model.safetensors")
    after = load_file(rl / "model" / "model.safetensors")
    assert any((before[k] - after[k]).abs().max() > 0 for k in before), "training changed no parameter"
    sft_losses = [json.loads(line)["loss"] for line in (sft / "metrics.jsonl").read_text().splitlines()]
    assert len(sft_losses) == 4 and sft_losses[-1] < sft_losses[0]
    assert trace_steps(rl) == {0: 8, 1: 8, 2: 8}
    record = json.loads((rl / "traces.jsonl").read_text().splitlines()[0])
    for key in ("prompt_id", "sample_index", "mode", "completion", "reward", "reward_components", "advantage",
                "weight_version", "worker", "finish_reason"):
        assert key in record
    rl_metrics = [json.loads(line) for line in (rl / "metrics.jsonl").read_text().splitlines()]
    ratios = [m["train/ratio"] for m in rl_metrics if "train/ratio" in m]
    # the sampler's logprobs are the learner's: weight sync after every step reached the rollout engine
    assert len(ratios) == 3 and all(abs(r - 1.0) < 1e-4 for r in ratios), ratios
    summary = json.loads((rl / "done.json").read_text())
    assert set(summary["eval_after"]) == {"think", "no_think"}
    chosen = json.loads((rl / "settings.json").read_text())["auto"]["rollout.engine"]
    assert chosen["chosen"] == "compact" and chosen["why"].startswith("auto: compact, a ")  # what auto picked, why
    assert "rollout engine auto: compact" in process.stdout
    assert all("train/packed_fraction" in m for m in rl_metrics if "train/loss" in m)
    rerun = posttrain("run", str(recipe))
    output, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0 and output.count("done earlier, skipped") == 2


@pytest.mark.cli_run("finished")
def test_kill_9_mid_stage_resumes_without_duplicate_or_missing_traces(tmp_path, cli_run):
    [finished] = cli_run.results
    assert finished.returncode == 0, finished.stdout + finished.stderr
    recipe = write_recipe(tmp_path, steps=6)  # the same run but for the RL stage's steps
    for done in ("init-model", "data", "00-sft"):  # so the first process below starts at the RL stage
        shutil.copytree(cli_run.root / "runs" / "e2e" / done, tmp_path / "runs" / "e2e" / done)
    rl = tmp_path / "runs" / "e2e" / "01-rl"
    process = posttrain("run", str(recipe), start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        checkpoints = list((rl / "checkpoints").glob("step-*")) if (rl / "checkpoints").exists() else []
        if checkpoints and max(trace_steps(rl), default=-1) >= 2:
            break
        time.sleep(0.5)
    assert process.poll() is None, "the run ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)  # the driver and its Ray processes, as a crash would
    process.wait()
    assert not (rl / "done.json").exists()
    resumed = posttrain("run", str(recipe))
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    assert "00-sft: done earlier, skipped" in output
    assert trace_steps(rl) == {step: 8 for step in range(6)}
    metric_steps = [json.loads(line)["step"] for line in (rl / "metrics.jsonl").read_text().splitlines()]
    assert sorted(metric_steps) == sorted([*range(6), 1, 3])  # every step, plus the evaluations after steps 2, 4
    evaluations = [json.loads(line) for line in (rl / "eval.jsonl").read_text().splitlines()]
    assert [e["label"] for e in evaluations] == ["before", "step 2", "step 4", "after"]  # none twice or lost
    answers = Counter(json.loads(line)["label"] for line in (rl / "eval_traces.jsonl").read_text().splitlines())
    assert answers == {label: 32 for label in ("before", "step 2", "step 4", "after")}  # 16 prompts x 2 modes
    assert re.search(r"01-rl: resuming from \S+/01-rl/checkpoints/step-0000\d\d\n", output), output
    summary = json.loads((rl / "done.json").read_text())  # the resumed process still compares with "before"
    assert summary["eval_before"] == {m: v for m, v in evaluations[0].items() if m in ("think", "no_think")}
    assert "think" in summary["headline"] and "->" in summary["headline"]


PIPELINED = """
name: pipelined
runs_dir: {runs}
data: {{kind: arithmetic, sft_rows: 32, rl_prompts: 64, eval_prompts: 8, modes: [think, no_think]}}
rollout: {{engine: auto, threads: 1, sampling: {{temperature: 1.0, max_tokens: 16}},
          eval_sampling: {{temperature: 0.0, max_tokens: 16}}}}
reward: {{components: [{{spec: repetition, options: {{n: 1}}}}]}}  # varies among the untrained model's samples, so the weights move
learner: {{precision: fp32}}
cluster: {{learner_threads: 1}}
stages:
  - {{kind: rl, steps: 4, prompts_per_step: 2, group_size: 4, pipeline: one_step_off_policy,
      learner: {{lr: 1.0e-3, warmup_steps: 0, loss: {{name: grpo}}}}}}
"""


@pytest.mark.cli_run("pipelined")
def test_one_step_off_policy_generates_each_step_with_the_previous_weights(cli_run):
    """Step k+1 is generated while step k trains: its samples carry weight version k, so from step 1 on the
    learner's ratio against the sampler's logprobs is no longer 1 (it is exactly 1 on the step-0 batch, which
    the initial weights generated and trained on)."""
    [process] = cli_run.results
    output = process.stdout + process.stderr
    assert process.returncode == 0, output
    assert "rollout engine auto: compact, a 3.4M-parameter model on CPU" in output  # what auto picked, and why
    rl = cli_run.root / "runs" / "pipelined" / "00-rl"
    records = [json.loads(line) for line in (rl / "traces.jsonl").read_text().splitlines()]
    assert Counter(r["step"] for r in records) == {step: 8 for step in range(4)}
    assert {(r["step"], r["weight_version"]) for r in records} == {(0, 0), (1, 0), (2, 1), (3, 2)}
    metrics = [json.loads(line) for line in (rl / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "train/ratio" in m]
    assert [m["rl/staleness_max"] for m in steps] == [0, 1, 1, 1]
    assert abs(steps[0]["train/ratio"] - 1.0) < 1e-5
    assert all(abs(m["train/ratio"] - 1.0) > 1e-5 for m in steps[1:]), [m["train/ratio"] for m in steps]
    assert all("timing/generate_wait_s" in m for m in steps[:3]) and "timing/generate_wait_s" not in steps[3]


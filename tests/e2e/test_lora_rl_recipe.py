"""The real CLI on a tiny RL recipe with `learner.lora`: only adapters train, every sync hands the engine the merged
weights (under `rollout.weight_sync: auto`, shared memory on this one host, which refuses a partial set of names),
and the published model is the merged one plus the adapter."""

import json

import pytest
import torch

pytestmark = pytest.mark.slow

RECIPE = """
name: lora
runs_dir: {runs}
data: {{kind: arithmetic, sft_rows: 32, rl_prompts: 64, eval_prompts: 8, modes: [think, no_think]}}
rollout: {{engine: compact, threads: 1, sampling: {{temperature: 1.0, max_tokens: 16}},
          eval_sampling: {{temperature: 0.0, max_tokens: 16}}}}
reward: {{components: [{{spec: repetition, options: {{n: 1}}}}]}}  # varies among the untrained model's samples
learner: {{precision: fp32}}
cluster: {{learner_threads: 1}}
stages:
  - {{kind: rl, steps: 3, prompts_per_step: 2, group_size: 4, learner: {{lr: 1.0e-2, warmup_steps: 0,
                                                                        loss: {{name: grpo}}, lora: {{r: 4}}}}}}
"""


def run_lora(root, fixture):
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE.format(runs=root / "runs"))
    return [["run", str(recipe)]]


RUNS = {"lora": run_lora}


@pytest.mark.cli_run("lora")
def test_an_rl_run_with_lora_syncs_the_merged_weights_and_publishes_model_and_adapter(cli_run):
    from safetensors.torch import load_file

    [process] = cli_run.results
    output = process.stdout + process.stderr
    assert process.returncode == 0, output
    rl = cli_run.root / "runs" / "lora" / "00-rl"
    metrics = [json.loads(line) for line in (rl / "metrics.jsonl").read_text().splitlines()]
    ratios = [m["train/ratio"] for m in metrics if "train/ratio" in m]
    # generated in turn: the sampler's logprobs are the learner's only if each sync reached the engine
    assert len(ratios) == 3 and all(abs(r - 1.0) < 1e-4 for r in ratios), ratios
    adapter = load_file(rl / "model" / "adapter" / "adapter_model.safetensors")
    assert adapter and all(".lora_A." in k or ".lora_B." in k for k in adapter)
    assert any(float(v.abs().max()) > 0 for k, v in adapter.items() if ".lora_B." in k)  # B starts at 0: trained
    merged = load_file(rl / "model" / "model.safetensors")
    assert not any("lora_" in k or k.startswith("base_model.") for k in merged)
    assert all(v.dtype == torch.float32 for v in merged.values())

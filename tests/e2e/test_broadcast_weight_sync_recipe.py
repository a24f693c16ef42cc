"""The real CLI on a tiny RL recipe with `rollout.weight_sync: broadcast`: learner rank 0 and the rollout worker form
their own gloo group (no GPUs here) and every sync streams the weights through it, bucket by bucket."""

import json

import pytest

pytestmark = pytest.mark.slow

RECIPE = """
name: broadcast
runs_dir: {runs}
data: {{kind: arithmetic, sft_rows: 32, rl_prompts: 64, eval_prompts: 8, modes: [think, no_think]}}
rollout: {{engine: compact, threads: 1, weight_sync: broadcast, sampling: {{temperature: 1.0, max_tokens: 16}},
          eval_sampling: {{temperature: 0.0, max_tokens: 16}}}}
reward: {{components: [{{spec: repetition, options: {{n: 1}}}}]}}  # varies among the untrained model's samples
learner: {{precision: fp32}}
cluster: {{learner_threads: 1}}
stages:
  - {{kind: rl, steps: 3, prompts_per_step: 2, group_size: 4, learner: {{lr: 1.0e-3, warmup_steps: 0,
                                                                        loss: {{name: grpo}}}}}}
"""


def run_broadcast(root, fixture):
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE.format(runs=root / "runs"))
    return [["run", str(recipe)]]


RUNS = {"broadcast": run_broadcast}


@pytest.mark.cli_run("broadcast")
def test_an_rl_run_syncs_every_step_through_the_broadcast_group(cli_run):
    [process] = cli_run.results
    output = process.stdout + process.stderr
    assert process.returncode == 0, output
    assert "weight sync through broadcast (gloo at 127.0.0.1:" in output  # loopback: a one-host cluster
    rl = cli_run.root / "runs" / "broadcast" / "00-rl"
    metrics = [json.loads(line) for line in (rl / "metrics.jsonl").read_text().splitlines()]
    ratios = [m["train/ratio"] for m in metrics if "train/ratio" in m]
    # generated in turn: the sampler's logprobs are the learner's only if each sync reached the engine
    assert len(ratios) == 3 and all(abs(r - 1.0) < 1e-4 for r in ratios), ratios
    records = [json.loads(line) for line in (rl / "traces.jsonl").read_text().splitlines()]
    assert {(r["step"], r["weight_version"]) for r in records} == {(0, 0), (1, 1), (2, 2)}

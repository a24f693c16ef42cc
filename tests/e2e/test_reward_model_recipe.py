"""A reward model trained in the run and scored with in the same run, through the CLI: SFT, then a reward_model
stage on a user's Parquet pairs in TRL's format (under other column names), then one RL step whose reward has the
trained model among its components (served by two replicas of its own), while the policy chain skips the reward model."""

import json

import datasets
import pytest

pytestmark = pytest.mark.slow

RECIPE = """
name: e2e-rm
runs_dir: {runs}
data: {{kind: arithmetic, sft_rows: 64, rl_prompts: 16, eval_prompts: 4}}
rollout: {{sampling: {{max_tokens: 16}}, eval_sampling: {{temperature: 0.0, max_tokens: 16}}}}
reward:
  components:
    - {{spec: math}}
    - {{spec: reward_model, weight: 0.5, options: {{model: "stage:rm", max_length: 64, threads: 1}},
       serve: {{replicas: 2, cpus: 0.125, batch_size: 2}}}}  # on its own Ray actors, beside the math pool
learner: {{precision: fp32}}
stages:
  - {{kind: sft, epochs: 1, batch_size: 32, learner: {{lr: 1.0e-3, loss: {{name: sft}}}}}}
  - {{kind: reward_model, name: rm, pairs: {pairs}, columns: {{prompt: question, chosen: good, rejected: bad}},
     eval_fraction: 0.25, epochs: 6, batch_size: 8, max_length: 64, learner: {{lr: 3.0e-3}}}}
  - {{kind: rl, steps: 1, prompts_per_step: 2, group_size: 2, eval_every: 100}}
"""


def _pairs(path):
    rows = [{"question": f"What is {a} + {b}?", "good": f"\\boxed{{{a + b}}}", "bad": f"\\boxed{{{a + b + 1}}} ok"}
            for a in range(10, 14) for b in range(20, 28)]
    datasets.Dataset.from_list(rows).to_parquet(str(path))


def run_rm(root, fixture):
    _pairs(root / "pairs.parquet")
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE.format(runs=root / "runs", pairs=root / "pairs.parquet"))
    return [["run", str(recipe)]]


RUNS = {"rm": run_rm}  # run two at a time in test order (tests/e2e/conftest.py)


@pytest.mark.cli_run("rm")
def test_train_a_reward_model_then_score_rl_with_it(cli_run):
    [done] = cli_run.results
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = cli_run.root / "runs" / "e2e-rm"
    rm = json.loads((run / "01-rm" / "done.json").read_text())
    assert rm["pairs"] == 24 and rm["held_out"]["pairs"] == 8
    # the rejected answers carry a surface mark ("ok") a reward model learns in a few steps
    assert rm["held_out"]["accuracy"] == 1.0 and rm["held_out"]["auc"] == 1.0
    before = json.loads((run / "01-rm" / "eval.json").read_text())["before"]
    assert before["margin"] == 0.0  # the zero head: untrained, it scores every answer alike
    assert (run / "01-rm" / "reward_model" / "config.json").exists() and not (run / "01-rm" / "model").exists()
    # RL sampled with the SFT policy (not the reward model) and scored with both components
    traces = [json.loads(line) for line in (run / "02-rl" / "traces.jsonl").open()]
    assert traces and all(set(t["reward_components"]) == {"math", "reward_model"} for t in traces)
    metrics = [json.loads(line) for line in (run / "02-rl" / "metrics.jsonl").open()]
    served = [m for m in metrics if "reward_pool/reward_server/reward_model/latency_s" in m]
    assert served and served[0]["reward_pool/reward_server/reward_model/batches"] == 2  # 4 samples, 2 per call
    config = json.loads((run / "02-rl" / "model" / "config.json").read_text())
    assert config["architectures"] == ["KeyeForConditionalGeneration"]

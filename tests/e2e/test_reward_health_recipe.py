"""A reward that fails on every sample stops `posttrain run` within a few steps, non-zero, naming the user's
file and line (issue #32: such a run used to train to its end, printing `reward 0.00`, and exit 0)."""

import json

import pytest

pytestmark = pytest.mark.slow

# TRL-style, reading a column the data does not have (the arithmetic prompts' column is `answer`)
USER_REWARD = '''\
def grade(completions, **kwargs):
    gold = kwargs["ground_truth"]
    return [float(c == g) for c, g in zip(completions, gold)]
'''

RECIPE = """
name: failing
runs_dir: {runs}
data: {{kind: arithmetic, sft_rows: 8, rl_prompts: 32, eval_prompts: 2, modes: [no_think]}}
rollout: {{engine: compact, threads: 1, sampling: {{temperature: 1.0, max_tokens: 8}},
          eval_sampling: {{temperature: 0.0, max_tokens: 8}}}}
reward: {{components: [{{spec: "{reward}:grade"}}, {{spec: format, weight: 0.1}}], error_window: 2}}
learner: {{precision: fp32}}
cluster: {{learner_threads: 1}}
stages:
  - {{kind: rl, steps: 10, prompts_per_step: 2, group_size: 2, learner: {{lr: 1.0e-3, warmup_steps: 0,
      loss: {{name: grpo}}}}}}
"""


def run_failing(root, fixture):
    reward = root / "my_reward.py"
    reward.write_text(USER_REWARD)
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE.format(runs=root / "runs", reward=reward))
    return [["run", str(recipe)]]


RUNS = {"failing_reward": run_failing}  # run by tests/e2e/conftest.py


@pytest.mark.cli_run("failing_reward")
def test_a_reward_failing_on_every_sample_stops_the_run_naming_the_users_line(cli_run):
    [process] = cli_run.results
    output = process.stdout + process.stderr
    assert process.returncode == 1, output
    assert "reward component 'grade' failed on 100% of samples (8 of 8) over the last 2 steps" in process.stderr
    assert "KeyError: 'ground_truth' (at my_reward.py:2)" in process.stderr, process.stderr
    rl = cli_run.root / "runs" / "failing" / "00-rl"
    metrics = [json.loads(line) for line in (rl / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1]  # stopped after the window's two steps, not at step 10
    assert all(m["reward/error_rate/grade"] == 1.0 and "reward/error_rate/format" not in m for m in metrics)
    assert not (rl / "done.json").exists()

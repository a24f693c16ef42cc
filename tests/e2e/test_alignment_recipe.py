"""Iterative alignment through the real CLI: sft -> rejection_sample -> preference (MPO) -> eval."""

import json
import math

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

RECIPE = """
name: align
runs_dir: {runs}
data: {{kind: arithmetic, sft_rows: 128, rl_prompts: 16, eval_prompts: 8, modes: [think, no_think]}}
rollout:
  sampling: {{temperature: 1.0, top_p: 1.0, top_k: 0, max_tokens: 24}}
  eval_sampling: {{temperature: 0.0, max_tokens: 24}}
  max_batch_size: 8  # 2 prompts x 4 answers per generate call: the chunking and group numbering are exercised
reward: {{components: [{{spec: math}}, {{spec: format, weight: 0.1}}]}}
learner: {{precision: fp32}}
stages:
  - {{kind: sft, epochs: 4, batch_size: 32, learner: {{lr: 1.0e-3, loss: {{name: sft}}}}}}
  - {{kind: rejection_sample, samples_per_prompt: 4}}
  - {{kind: preference, epochs: 1, batch_size: 4, learner: {{lr: 1.0e-4, loss: {{name: mpo}}}}}}
  - {{kind: eval}}
"""


def run_align(root, fixture):
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE.format(runs=root / "runs"))
    return [["run", str(recipe)]]


RUNS = {"align": run_align}  # run two at a time in test order (tests/e2e/conftest.py)


@pytest.mark.cli_run("align")
def test_rejection_sampling_then_mpo(cli_run):
    [result] = cli_run.results
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = cli_run.root / "runs" / "align"
    sampled = run / "01-rejection_sample"
    traces = [json.loads(line) for line in (sampled / "traces.jsonl").read_text().splitlines()]
    assert len(traces) == 16 * 4 and {t["sample_index"] for t in traces} == {0, 1, 2, 3}
    pairs = [json.loads(line) for line in (sampled / "data" / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)
    for pair in pairs:  # chosen is the best-scored answer of its prompt, rejected the worst
        rewards = [t["reward"] for t in traces if t["prompt_id"] == pair["id"]]
        assert pair["chosen_reward"] == max(rewards) and pair["rejected_reward"] == min(rewards)
    summary = json.loads((run / "02-preference" / "done.json").read_text())
    assert summary["pairs"] == len(pairs)
    metrics = [json.loads(line) for line in (run / "02-preference" / "metrics.jsonl").read_text().splitlines()]
    first = metrics[0]  # the policy starts as its own reference: DPO = ln 2, margin 0
    assert first["dpo"] == pytest.approx(math.log(2), abs=1e-5) and first["reward_margin"] == 0.0
    assert first["loss"] == pytest.approx(0.8 * first["dpo"] + 0.2 * first["bco"] + first["sft"], rel=1e-5)
    before = load_file(run / "00-sft" / "model" / "model.safetensors")
    after = load_file(run / "02-preference" / "model" / "model.safetensors")
    assert any((before[k] - after[k]).abs().max() > 0 for k in before), "MPO changed no parameter"
    # the held-out prompts reach the eval stage from the run's data, past the sampling stage's own data
    assert set(json.loads((run / "03-eval" / "done.json").read_text())["eval"]) == {"think", "no_think"}

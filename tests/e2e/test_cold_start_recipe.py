"""cold_start_build -> sft -> eval(format) through the real CLI, at the smallest size that covers every mode."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

RECIPE = """
name: cs
runs_dir: {runs}
data: {{kind: files}}
rollout: {{eval_sampling: {{temperature: 0.0, max_tokens: 32}}, max_tool_turns: 1}}
learner: {{precision: fp32}}
stages:
  - {{kind: cold_start_build, size: 40, config: {{eval_size: 1}}}}
  - {{kind: sft, epochs: 1, batch_size: 16, learner: {{lr: 1.0e-3, loss: {{name: sft}}}}}}
  - {{kind: eval, reward: format, modes: [no_think, think]}}
"""


def test_build_train_and_check_formats(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(runs=tmp_path / "runs"))
    result = subprocess.run([sys.executable, "-m", "posttrain.cli", "run", str(recipe)], capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = tmp_path / "runs" / "cs"
    build = json.loads((run / "00-cold_start_build" / "done.json").read_text())
    assert build["samples"] == 40 and set(build["by_mode"]) >= {"no_think", "think", "agentic"}
    sft_rows = (run / "00-cold_start_build" / "data" / "sft.jsonl").read_text().splitlines()
    assert len(sft_rows) == 40
    assert (run / "01-sft" / "model" / "config.json").exists()
    evaluation = json.loads((run / "02-eval" / "done.json").read_text())["eval"]
    assert set(evaluation) == {"no_think", "think"} and all(v["n"] > 0 for v in evaluation.values())

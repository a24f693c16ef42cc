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


def run_cs(root, fixture):
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE.format(runs=root / "runs"))
    return [["run", str(recipe)]]


RUNS = {"cs": run_cs}  # run two at a time in test order (tests/e2e/conftest.py)


@pytest.mark.cli_run("cs")
def test_build_train_and_check_formats(cli_run):
    [result] = cli_run.results
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = cli_run.root / "runs" / "cs"
    build = json.loads((run / "00-cold_start_build" / "done.json").read_text())
    assert build["samples"] == 40 and set(build["by_mode"]) >= {"no_think", "think", "agentic"}
    sft_rows = (run / "00-cold_start_build" / "data" / "sft.jsonl").read_text().splitlines()
    assert len(sft_rows) == 40
    assert (run / "01-sft" / "model" / "config.json").exists()
    evaluation = json.loads((run / "02-eval" / "done.json").read_text())["eval"]
    assert set(evaluation) == {"no_think", "think"} and all(v["n"] > 0 for v in evaluation.values())
    answers = [json.loads(line) for line in (run / "02-eval" / "eval_traces.jsonl").read_text().splitlines()]
    assert len(answers) == sum(v["n"] for v in evaluation.values())
    for mode, v in evaluation.items():  # the per-answer trace agrees with the summary
        rewards = [a["reward"] for a in answers if a["mode"] == mode]
        assert sum(r >= 0.5 for r in rewards) == round(v["accuracy"] * v["n"])
    shown = subprocess.run([sys.executable, "-m", "posttrain.cli", "traces", "show", str(run), "--stage",
                            "02-eval:eval", "--limit", "1"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and answers[0]["prompt_id"] in shown.stdout, shown.stdout + shown.stderr

"""A second architecture family through the real CLI, as a user brings it: a `LlamaForCausalLM` with a Llama-3-style
tokenizer (its own chat template and `<|eot_id|>`, no Keye tokens, no mode tags) goes through `posttrain model
import` (which adds the tags), then SFT and one GRPO step, so the toolkit stays family-agnostic.

The random model scores 0 on arithmetic, so the RL step also uses a length reward (a plain native function in
a file) that varies within each group: the step then has non-zero advantages and must change the weights.
"""

import json

import pytest
from safetensors.torch import load_file
from transformers import AutoTokenizer

pytestmark = pytest.mark.slow

RECIPE = """
name: llama
runs_dir: {runs}
model: {{path: {model}}}
data: {{kind: arithmetic, sft_rows: 32, rl_prompts: 16, eval_prompts: 4, modes: [think, no_think]}}
rollout:
  sampling: {{temperature: 1.0, top_p: 1.0, top_k: 0, max_tokens: 16}}
  eval_sampling: {{temperature: 0.0, max_tokens: 16}}
reward: {{components: [{{spec: math}}, {{spec: "{plugin}:length", weight: 1.0}}]}}
learner: {{precision: fp32}}
stages:
  - {{kind: sft, epochs: 2, batch_size: 8, learner: {{lr: 3.0e-3, loss: {{name: sft}}}}}}
  - {{kind: rl, steps: 1, prompts_per_step: 2, group_size: 4, learner: {{lr: 1.0e-3, loss: {{name: grpo}}}}}}
"""

PLUGIN = '''
def length(sample):
    """Characters of the completion, scaled: differs between a group's samples even for a random model."""
    return len(sample.completion) / 64
'''


def run_llama(root, fixture):
    """`posttrain model import` of the session's Llama, then the recipe on the imported directory."""
    plugin = root / "length_reward.py"
    plugin.write_text(PLUGIN)
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE.format(runs=root / "runs", model=root / "imported", plugin=plugin))
    return [["model", "import", str(fixture("llama_dir")), str(root / "imported")], ["run", str(recipe)]]


RUNS = {"llama": run_llama}  # run two at a time in test order (tests/e2e/conftest.py)


@pytest.mark.cli_run("llama")
def test_llama_sft_and_one_rl_step_through_the_cli(cli_run):
    imported, *rest = cli_run.results
    assert imported.returncode == 0 and "added 8 mode tags" in imported.stdout, imported.stdout + imported.stderr
    [done] = rest
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    model, run = cli_run.root / "imported", cli_run.root / "runs" / "llama"
    sft, rl = run / "00-sft", run / "01-rl"
    config = json.loads((rl / "model" / "config.json").read_text())
    assert (config["model_type"], config["architectures"]) == ("llama", ["LlamaForCausalLM"])
    assert config["vocab_size"] == 608  # 600 + the 8 mode tags the import added

    losses = [json.loads(line)["loss"] for line in (sft / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.5, losses  # 32 rows / 8 per batch, 2 epochs

    records = [json.loads(line) for line in (rl / "traces.jsonl").read_text().splitlines()]
    assert len(records) == 8 and {r["step"] for r in records} == {0}
    assert any(r["advantage"] != 0 for r in records)
    # the prompt went through Llama's own template, its content as text (not a rendered list of items)
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    record = records[0]
    text = tokenizer.apply_chat_template([{"role": "user", "content": f"{record['prompt']} /{record['mode']}"}],
                                         tokenize=False, add_generation_prompt=True)
    assert record["prompt_tokens"] == len(tokenizer.encode(text, add_special_tokens=False))

    metrics = [json.loads(line) for line in (rl / "metrics.jsonl").read_text().splitlines()]
    ratios = [m["train/ratio"] for m in metrics if "train/ratio" in m]
    assert len(ratios) == 1 and abs(ratios[0] - 1.0) < 1e-4  # the engine's logprobs are the learner's
    before, after = load_file(sft / "model" / "model.safetensors"), load_file(rl / "model" / "model.safetensors")
    assert before.keys() == after.keys()
    assert any((before[k] - after[k]).abs().max() > 0 for k in before), "the RL step changed no parameter"

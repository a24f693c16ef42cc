"""The pre-training stack through the real CLI at the smallest size that covers every stage kind: data with
hygiene and planted mismatches -> SigLIP stage 0 -> score filter -> align -> pretrain -> two anneals from one
stage-2 model -> merge."""

import json

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

RECIPE = """
name: e2e-pretrain
runs_dir: {runs}
data: {{kind: files}}
learner: {{precision: fp32}}
stages:
  - {{kind: pretrain_data, train_rows: {{caption: 48, counting: 48, colour_vqa: 48}}, eval_rows: 6,
     mismatched_captions: 0.25}}
  - {{kind: siglip, name: stage0, steps: 2, batch_size: 8}}
  - {{kind: score_filter, scorer: stage0, threshold: 1.0e-4}}
  - {{kind: align, name: align, mixture: {{caption: 1}}, steps: 3, batch_size: 4, learner: {{lr: 1.0e-3}}}}
  - {{kind: pretrain, name: base, mixture: {{caption: 1, counting: 1, colour_vqa: 1}}, steps: 3, batch_size: 4,
     learner: {{lr: 1.0e-3}}}}
  - {{kind: anneal, name: a, start_from: base, mixture: {{counting: 1}}, steps: 2, batch_size: 4}}
  - {{kind: anneal, name: b, start_from: base, mixture: {{colour_vqa: 1}}, steps: 2, batch_size: 4}}
  - {{kind: merge, models: [a, b], weights: [1, 3]}}
"""


def run_pretrain(root, fixture):
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE.format(runs=root / "runs"))
    return [["run", str(recipe)]]


RUNS = {"pretrain": run_pretrain}  # run two at a time in test order (tests/e2e/conftest.py)


@pytest.mark.cli_run("pretrain")
def test_pretraining_stages_end_to_end(cli_run):
    [done] = cli_run.results
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = cli_run.root / "runs" / "e2e-pretrain"
    weights = {name: load_file(run / stage / "model.safetensors") for name, stage in
               [("init", "01-stage0/model"), ("align", "03-align/model"), ("base", "04-base/model"), ("a", "05-a/model"),
                ("b", "06-b/model"), ("merged", "07-merge/model")]}
    init, align = weights["init"], weights["align"]
    # stage 1: only the projector trains; frozen groups keep their bytes
    for name, tensor in init.items():
        assert torch.equal(tensor, align[name]) == (not name.startswith("mlp_AR.")), name
    trained = json.loads((run / "03-align" / "eval.json").read_text())["trained_groups"]
    assert {g: v["changed"] for g, v in trained.items()} == {"visual": False, "mlp_AR": True, "model": False,
                                                             "lm_head": False}
    # both anneals start from the stage-2 model, not from each other
    assert not torch.equal(weights["a"]["lm_head.weight"], weights["b"]["lm_head.weight"])
    expected = 0.25 * weights["a"]["lm_head.weight"] + 0.75 * weights["b"]["lm_head.weight"]
    assert torch.allclose(weights["merged"]["lm_head.weight"], expected, atol=1e-6)
    evaluation = json.loads((run / "04-base" / "eval.json").read_text())
    assert set(evaluation["after"]) == {"caption", "counting", "colour_vqa"}
    assert evaluation["after"]["counting"]["n"] == 6 and "interval" in evaluation["after"]["counting"]
    merge = json.loads((run / "07-merge" / "done.json").read_text())
    assert set(merge["versus_parents_mean"]) == {"caption", "counting", "colour_vqa"}
    # the score filter read the stage-0 towers (2 steps: near random), dropped what scored below 1e-4, and later stages read its shards
    filtered = json.loads((run / "02-score_filter" / "data" / "score_filter.json").read_text())
    assert filtered["caption"]["scored"] == filtered["caption"]["rows"] and filtered["counting"]["scored"] == 0
    assert 0 < filtered["caption"]["planted"] <= 12  # 25% of 48, less any that hygiene removed
    kept = (run / "02-score_filter" / "data" / "caption.train.jsonl").read_text().splitlines()
    assert len(kept) == filtered["caption"]["rows"] - filtered["caption"]["dropped"]
    hygiene = json.loads((run / "00-pretrain_data" / "data" / "hygiene.json").read_text())
    assert hygiene["recall_at_threshold"] >= 0.99

"""Stage 0 (`kind: siglip`) on a tiny caption shard: it learns (loss falls, held-out retrieval rises), changes
only `visual.*` of the Keye directory, writes the towers, and resumes from its checkpoints."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from rich.console import Console

from keye_vl.text_tower import ImageTextScorer
from keye_vl.weight_files import load_prefixed
from runtime.local_ray import local_ray
from posttrain.recipe import Recipe
from posttrain.stages.context import StageContext
from posttrain.stages.siglip import caption_pairs, check_stage, retrieval, run_siglip

# Measured to learn in ~40 s on 64 captions (one thread): larger batches or learning rates sit longer in the collapsed
# start (every image embedding alike, the loss at its prior of about 4.45).
LEARNS = {"steps": 200, "batch_size": 16, "lr": 1e-3}


@pytest.fixture(scope="module")
def caption_data(tmp_path_factory):
    from pretrain_data.build import build_pretrain_data

    out = tmp_path_factory.mktemp("captions")
    build_pretrain_data(out, {"caption": (64, 16)})
    return out


@pytest.fixture(scope="module")
def cluster():
    """One loopback Ray for the module's stage runs (each stage kills its learner actors when it ends)."""
    with local_ray(2):
        yield


# Four steps on one rank, checkpointed after two: the run the resume test stops and continues, and the one the
# two-rank test compares against.
WHOLE = {"steps": 4, "batch_size": 16, "lr": 1e-3, "checkpoint_every": 2}


@pytest.fixture(scope="module")
def whole(tmp_path_factory, tiny_model_dir, caption_data, cluster):
    ctx = context(tmp_path_factory.mktemp("whole"), tiny_model_dir, caption_data, name="whole", **WHOLE)
    return ctx, run_siglip(ctx)


def context(tmp_path, model_dir, data_dir, name="s", num_learners=1, **stage) -> StageContext:
    recipe = Recipe.model_validate({
        "name": name, "runs_dir": str(tmp_path / "runs"), "stages": [{"kind": "siglip", **stage}],
        "cluster": {"num_learners": num_learners, "cpus_per_learner": 1, "learner_threads": 1},
        "learner": {"precision": "fp32"}, "trace": {"tensorboard": False}})
    return StageContext(recipe, 0, recipe.stages[0], recipe.stage_dirs()[0], model_dir, data_dir,
                        Console(width=120))


def metrics(ctx) -> list[dict]:
    return [json.loads(line) for line in (ctx.dir / "metrics.jsonl").read_text().splitlines()]


def test_retrieval_counts_a_caption_equal_to_the_true_one_as_right():
    logits = torch.tensor([[5.0, 1.0, 0.0], [0.0, 1.0, 4.0], [0.0, 3.0, 1.0]])
    result = retrieval(logits, ["a", "b", "b"])  # images 1 and 2 pick each other's caption, which reads the same
    assert (result.correct, result.total) == (3, 3)
    assert result.chance == pytest.approx((1 + 2 + 2) / 9)
    assert retrieval(logits, ["a", "b", "c"]).correct == 1


def test_bad_settings_and_missing_captions_are_explained(tmp_path, tiny_model_dir, caption_data):
    ctx = context(tmp_path, tiny_model_dir, caption_data, num_learners=2, batch_size=3)
    with pytest.raises(ValueError, match=r"stages\[0\] \(00-siglip\): batch_size 3 must be a multiple of "
                                         r"cluster.num_learners \(2\)"):
        check_stage(ctx, 64)
    with pytest.raises(FileNotFoundError, match="put a `kind: pretrain_data` stage with caption rows before it"):
        caption_pairs(context(tmp_path, tiny_model_dir, tmp_path), "train")


@pytest.mark.slow
def test_stage_learns(tmp_path, tiny_model_dir, caption_data, cluster):
    ctx = context(tmp_path, tiny_model_dir, caption_data, checkpoint_every=1000, **LEARNS)
    summary = run_siglip(ctx)
    before, after = summary["retrieval"]["before"], summary["retrieval"]["after"]
    assert after["correct"] >= before["correct"] + 2, summary["headline"]
    assert before["total"] == after["total"] == 16 and before["chance"] == pytest.approx(1 / 16)
    losses = [m["loss"] for m in metrics(ctx)]
    assert len(losses) == LEARNS["steps"] and sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 1.0
    scorer = ImageTextScorer.load(ctx.model_out, ctx.dir / "siglip")  # what the score filter loads
    held_out = caption_pairs(ctx, "eval")
    assert retrieval(scorer.logits(held_out.images, held_out.captions), held_out.captions).correct == \
        after["correct"]


def test_stage_changes_only_the_vision_tower_and_resumes_exactly(tmp_path, tiny_model_dir, caption_data, whole):
    whole, expected = whole
    resumed = context(tmp_path, tiny_model_dir, caption_data, name="resumed", **WHOLE)
    shutil.copytree(whole.dir, resumed.dir)  # as if it had stopped right after step 2's checkpoint:
    for done_later in ("checkpoints/step-000004", "model", "siglip"):
        shutil.rmtree(resumed.dir / done_later)
    got = run_siglip(resumed)

    start, out = load_prefixed(tiny_model_dir, ""), load_prefixed(whole.model_out, "")
    assert start.keys() == out.keys()
    trained = [n for n in start if not torch.equal(start[n], out[n])]
    assert trained and all(n.startswith("visual.") for n in trained)
    assert all(torch.equal(start[n], out[n]) for n in start if n.startswith(("model.", "lm_head", "mlp_AR")))
    assert (whole.model_out / "tokenizer.json").is_file() and not (whole.model_out / "siglip").exists()
    assert (whole.dir / "siglip" / "model.safetensors").is_file()

    assert got["retrieval"] == expected["retrieval"]
    assert [m["loss"] for m in metrics(resumed)] == [m["loss"] for m in metrics(whole)]
    assert len(metrics(resumed)) == 4
    resumed_out = load_prefixed(resumed.model_out, "visual.")
    assert all(torch.equal(t, out[f"visual.{n}"]) for n, t in resumed_out.items())
    evals = [json.loads(line) for line in (resumed.dir / "eval.jsonl").read_text().splitlines()]
    assert [(e["step"], e["label"]) for e in evals] == [(0, "before"), (4, "after")]


@pytest.mark.slow
def test_two_learner_ranks_train_like_one(tmp_path, tiny_model_dir, caption_data, whole):
    """DeepSpeed ranks as Ray actors, each with half of every step's pairs: the same losses and gradient norms as
    one rank with all of them (float rounding apart), because each rank's loss sees the other's captions."""
    one, _ = whole
    two = context(tmp_path, tiny_model_dir, caption_data, name="two", num_learners=2, **WHOLE)
    run_siglip(two)
    for a, b in zip(metrics(one), metrics(two), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)

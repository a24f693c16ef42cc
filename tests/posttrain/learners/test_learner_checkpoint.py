"""Checkpoints: resume reproduces an uninterrupted run; saves are atomic; wrong resumes are explained."""

import json

import pytest
import torch

from posttrain.learners.learner import Learner
from posttrain.learners.learner_config import LearnerConfig


def config(model, stage, **kw):
    return LearnerConfig(model=model, zero_stage=stage, lr=1e-2, grad_accum_steps=2, schedule="cosine",
                         warmup_steps=1, total_steps=6, precision="fp32", **kw)


@pytest.mark.parametrize("stage", [0, 3])
def test_resume_reproduces_the_losses_of_an_uninterrupted_run(stage, qwen_dir, make_batch, tmp_path):
    batches = [make_batch(4, 12, seed=s) for s in range(5)]
    straight = Learner(config(qwen_dir, stage))
    expected = [straight.train_step(b)["loss"] for b in batches]

    first = Learner(config(qwen_dir, stage))
    losses = [first.train_step(b)["loss"] for b in batches[:2]]
    first.save(tmp_path / "ckpt", data_state={"epoch": 0, "position": 2})
    torch.manual_seed(1234)  # the resumed process starts from other RNG states
    resumed = Learner(config(qwen_dir, stage))
    data_state = resumed.load(tmp_path / "ckpt")
    assert data_state == {"epoch": 0, "position": 2} and resumed.step == 2
    losses += [resumed.train_step(b)["loss"] for b in batches[data_state["position"]:]]
    assert losses == pytest.approx(expected, abs=1e-6)
    assert losses[-1] != losses[1]  # the later losses are real training, not a replay of the first


def test_checkpoint_holds_a_loadable_hf_model_and_the_tokenizer(tiny_model_dir, make_batch, tmp_path):
    from transformers import AutoModelForCausalLM

    learner = Learner(LearnerConfig(model=str(tiny_model_dir), lr=1e-2, precision="fp32"))
    learner.train_step(make_batch(4, 16, vocab=1000))
    out = learner.save(tmp_path / "ckpt")
    assert (out / "model" / "tokenizer_config.json").is_file()
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 1
    reloaded = AutoModelForCausalLM.from_pretrained(out / "model")
    for name, param in learner.module.named_parameters():
        assert torch.equal(param, reloaded.state_dict()[name]), name


def test_a_failed_save_leaves_the_previous_checkpoint_intact(qwen_dir, make_batch, tmp_path, monkeypatch):
    learner = Learner(config(qwen_dir, 0))
    learner.train_step(make_batch(4, 12))
    learner.save(tmp_path / "ckpt", {"position": 1})
    learner.train_step(make_batch(4, 12, seed=1))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(learner.engine, "save_checkpoint", crash)
    with pytest.raises(OSError, match="disk full"):
        learner.save(tmp_path / "ckpt", {"position": 2})
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["ckpt"]
    assert Learner(config(qwen_dir, 0)).load(tmp_path / "ckpt") == {"position": 1}


def test_wrong_resumes_are_explained(qwen_dir, make_batch, tmp_path):
    learner = Learner(config(qwen_dir, 0))
    learner.train_step(make_batch(4, 12))
    learner.save(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="not a complete learner checkpoint"):
        learner.load(tmp_path)
    with pytest.raises(ValueError, match="saved with zero_stage=0 but this learner has zero_stage=2"):
        Learner(config(qwen_dir, 2)).load(tmp_path / "ckpt")

"""A non-finite loss skips the update as if the batch never came; learning-rate schedules by hand."""

import math

import pytest
import torch

from posttrain.learners.engine_setup import WarmupDecay
from posttrain.learners.learner import Learner
from posttrain.learners.learner_config import LearnerConfig
from posttrain.losses import LossOutput, register_loss
from posttrain.losses.sft import SFTLoss


@register_loss("test_poisoned_sft")
class PoisonedSFT(SFTLoss):
    """SFT whose loss is NaN on batches marked by a negative advantage (models a numerical blow-up)."""

    def forward(self, inputs):
        out = super().forward(inputs)
        if inputs.advantages is not None and bool((inputs.advantages < 0).any()):
            return LossOutput(out.loss * float("nan"), out.stats)
        return out


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_nan_loss_skips_the_step_and_saves_the_batch(stage, qwen_dir, make_batch, tmp_path):
    good = [make_batch(4, 12, seed=s).with_fields(advantages=torch.ones(4)) for s in (1, 2)]
    bad = make_batch(4, 12, seed=9).with_fields(advantages=-torch.ones(4))
    config = dict(model=qwen_dir, zero_stage=stage, lr=1e-2, grad_accum_steps=2, schedule="linear", total_steps=5,
                  precision="fp32", loss={"name": "test_poisoned_sft"}, nan_batch_dir=str(tmp_path))
    skipping = Learner(LearnerConfig(**config))
    m1 = skipping.train_step(good[0])
    m_bad = skipping.train_step(bad)
    m2 = skipping.train_step(good[1])
    clean = Learner(LearnerConfig(**config))
    c1, c2 = clean.train_step(good[0]), clean.train_step(good[1])
    assert (m_bad["skipped"], m_bad["skipped_steps"], m_bad["step"]) == (1.0, 1.0, 1.0)
    assert m2["step"] == 2.0 and m2["lr"] == c2["lr"]  # the scheduler did not advance either
    assert (m1["loss"], m2["loss"]) == (c1["loss"], c2["loss"])
    for (name, p), q in zip(skipping.module.named_parameters(), clean.module.parameters()):
        assert torch.equal(p, q), name
    saved = list(tmp_path.glob("*.pt"))
    assert len(saved) == 1 and torch.equal(torch.load(saved[0])["input_ids"], bad.input_ids)


def test_consecutive_nan_losses_stop_the_run(qwen_dir, make_batch, tmp_path):
    bad = make_batch(4, 12).with_fields(advantages=-torch.ones(4))
    learner = Learner(LearnerConfig(model=qwen_dir, loss={"name": "test_poisoned_sft"}, max_consecutive_skips=2,
                                    nan_batch_dir=str(tmp_path)))
    learner.train_step(bad)
    with pytest.raises(FloatingPointError, match="2 consecutive steps"):
        learner.train_step(bad)


def test_warmup_then_cosine_and_linear():
    cosine = WarmupDecay(warmup=2, total=6, kind="cosine", floor=0.1)
    assert [cosine(k) for k in range(2)] == [0.5, 1.0]
    assert cosine(2) == pytest.approx(1.0)
    assert cosine(4) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cosine(6) == pytest.approx(0.1) and cosine(100) == pytest.approx(0.1)
    linear = WarmupDecay(warmup=0, total=4, kind="linear", floor=0.0)
    assert [linear(k) for k in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


def test_learner_follows_the_schedule(qwen_dir, make_batch):
    learner = Learner(LearnerConfig(model=qwen_dir, lr=0.1, schedule="linear", warmup_steps=1, total_steps=3))
    lrs = [learner.train_step(make_batch(2, 8))["lr"] for _ in range(4)]
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.0])

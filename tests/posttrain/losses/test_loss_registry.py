"""The registry and the learner config reject unknown names and arguments with the accepted ones."""

import pytest
from pydantic import ValidationError

from posttrain.learners.learner_config import LearnerConfig
from posttrain.losses import LOSSES, Loss, LossOutput, build_loss, register_loss


def test_every_issue_loss_is_registered():
    assert {"sft", "next_token", "grpo", "gspo", "dpo", "bco_pair", "mpo", "bradley_terry"} <= set(LOSSES)


def test_unknown_loss_and_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="unknown loss 'ppo2'.*registered losses"):
        build_loss("ppo2")
    with pytest.raises(ValueError, match="bad arguments \\['clip'\\].*accepted.*clip_low"):
        build_loss("grpo", clip=0.2)
    with pytest.raises(ValueError, match="unknown loss aggregation 'mean'"):
        build_loss("grpo", aggregation="mean")
    with pytest.raises(ValueError, match="unknown KL estimator 'k4'"):
        build_loss("grpo", kl_estimator="k4")


def test_new_variants_register_themselves():
    @register_loss("test_constant")
    class Constant(Loss):
        def __init__(self, value: float = 1.0):
            self.value = value

        def forward(self, inputs):
            return LossOutput(inputs.logprobs.sum() * 0 + self.value)

    assert build_loss("test_constant", value=2.0).value == 2.0
    with pytest.raises(ValueError, match="registered twice"):
        register_loss("test_constant")(type("Other", (Loss,), {}))


def test_learner_config_rejects_unknown_keys_and_bad_loss_args():
    with pytest.raises(ValidationError, match="lr_rate"):
        LearnerConfig(lr_rate=1e-3)
    with pytest.raises(ValidationError, match="bogus"):
        LearnerConfig(loss={"name": "grpo", "args": {"bogus": 1}})
    with pytest.raises(ValidationError, match="total_steps"):
        LearnerConfig(schedule="cosine")
    with pytest.raises(ValidationError, match="zero_stage"):
        LearnerConfig(zero_stage=4)
    config = LearnerConfig(loss={"name": "grpo", "args": {"clip_high": 0.28}}, zero_stage=3)
    assert LearnerConfig.model_validate(config.model_dump(mode="json")) == config

"""The on-policy distillation loss (posttrain/losses/opd.py) against a hand computation on a fixed batch."""

import math

import pytest
import torch

from posttrain.losses import LossInputs, build_loss

# two sequences, three positions; the last position of row 1 is padding
LOGP = [[-1.0, -2.0, -0.5], [-0.2, -3.0, 0.0]]  # current student == sampler (one update per batch: ratio 1)
TEACHER = [[-0.5, -3.0, -0.5], [-1.2, -1.0, 0.0]]
MASK = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]


def _inputs(advantages=None, old=None):
    logp = torch.tensor(LOGP, requires_grad=True)
    return logp, LossInputs(logprobs=logp, mask=torch.tensor(MASK), ref_logprobs=torch.tensor(TEACHER),
                            old_logprobs=torch.tensor(old if old is not None else LOGP),
                            advantages=None if advantages is None else torch.tensor(advantages))


def test_reverse_kl_advantage_by_hand():
    # A_t = log p_teacher - log p_student: [0.5, -1.0, 0.0], [-1.0, 2.0]; ratio 1 -> l_t = -A_t
    # token-mean over 5 tokens: -(0.5 - 1.0 + 0.0 - 1.0 + 2.0) / 5 = -0.1
    logp, inputs = _inputs()
    out = build_loss("opd")(inputs)
    assert out.loss.item() == pytest.approx(-0.1)
    # logged kl (k1 of reverse KL, may be negative): mean(log p_s - log p_t) = (-0.5 + 1 + 0 + 1 - 2) / 5 = -0.1
    assert out.stats["kl"].item() == pytest.approx(-0.1)
    out.loss.backward()  # d loss / d logp_t = -A_t / 5 on loss tokens (ratio' = 1 at r = 1)
    expected = [[-0.1, 0.2, 0.0], [0.2, -0.4, 0.0]]
    assert torch.allclose(logp.grad, torch.tensor(expected))


def test_adv_clip_and_rl_term_by_hand():
    # adv_clip 0.6: A = [0.5, -0.6, 0.0], [-0.6, 0.6]; + sequence advantages [1.0, -0.5] (rl_weight x GRPO)
    # -> [1.5, 0.4, 1.0], [-1.1, 0.1]; loss = -(1.5 + 0.4 + 1.0 - 1.1 + 0.1) / 5 = -0.38
    _, inputs = _inputs(advantages=[1.0, -0.5])
    assert build_loss("opd", adv_clip=0.6)(inputs).loss.item() == pytest.approx(-0.38)


def test_importance_ratio_is_clipped_like_ppo():
    # sampler logprob of token (0, 0) was -1.5: r = e^0.5 = 1.6487 > 1.2; A = -(-1.5 - -0.5) = 1.0 > 0 -> clipped
    # to 1.2, so that token contributes -1.2; others as before with A from old = [-1.5, -2.0, -0.5] / row 1
    old = [[-1.5, -2.0, -0.5], [-0.2, -3.0, 0.0]]
    _, inputs = _inputs(old=old)
    loss = build_loss("opd")(inputs).loss.item()
    assert loss == pytest.approx(-(1.2 * 1.0 - 1.0 + 0.0 - 1.0 + 2.0) / 5)
    assert math.exp(0.5) > 1.2


def test_needs_teacher_logprobs():
    logp = torch.zeros(1, 2, requires_grad=True)
    with pytest.raises(ValueError, match="ref_logprobs"):
        build_loss("opd")(LossInputs(logprobs=logp, mask=torch.ones(1, 2)))

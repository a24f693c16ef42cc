"""GRPO family against hand-computed values: ratios, clip-high, aggregation modes, KL estimators, GSPO, advantages."""

import math

import pytest
import torch

from posttrain.losses import BatchTotals, LossInputs, build_loss, get_kl, group_advantages, kl_penalized_rewards

E = math.exp
# Two sequences: 3 and 2 loss tokens; advantages +1 and -2.
LOGP = torch.tensor([[-1.0, -0.5, -2.0], [-0.3, -1.2, -9.0]])
OLD = torch.tensor([[-1.2, -0.5, -1.0], [-0.3, -1.0, -9.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
ADV = torch.tensor([1.0, -2.0])
# Per-token ratios: row 0: e^0.2, 1, e^-1; row 1: 1, e^-0.2.


def inputs(**kw):
    base = dict(logprobs=LOGP.clone().requires_grad_(True), mask=MASK, old_logprobs=OLD, advantages=ADV)
    base.update(kw)
    return LossInputs(**base)


def per_token(clip_low, clip_high):
    """Hand-written PPO terms -min(rA, clip(r)A) for the fixture above."""
    def term(r, a):
        return max(-a * r, -a * min(max(r, 1 - clip_low), 1 + clip_high))
    row0 = [term(E(0.2), 1.0), term(1.0, 1.0), term(E(-1.0), 1.0)]
    row1 = [term(1.0, -2.0), term(E(-0.2), -2.0)]
    return row0, row1


@pytest.mark.parametrize("clip_high", [0.2, 0.28])
def test_token_mean_with_symmetric_and_higher_clip(clip_high):
    row0, row1 = per_token(0.2, clip_high)
    expected = (sum(row0) + sum(row1)) / 5
    out = build_loss("grpo", clip_low=0.2, clip_high=clip_high)(inputs())
    assert out.loss.item() == pytest.approx(expected, abs=1e-6)
    # e^0.2 = 1.2214 is clipped at 1.2 but not at 1.28: clip-high changes the loss
    assert row0[0] == pytest.approx(-1.2 if clip_high == 0.2 else -E(0.2))
    assert out.stats["clip_frac_high"].item() == pytest.approx(1 / 5 if clip_high == 0.2 else 0.0)


def test_clip_low_applies_to_negative_advantages():
    out = build_loss("grpo", clip_low=0.1, clip_high=0.2)(inputs())
    row0, row1 = per_token(0.1, 0.2)
    assert row1[1] == pytest.approx(2 * 0.9)  # ratio e^-0.2 = 0.819 < 0.9 with A < 0: clipped
    assert out.loss.item() == pytest.approx((sum(row0) + sum(row1)) / 5, abs=1e-6)
    assert out.stats["clip_frac_low"].item() == pytest.approx(1 / 5)


def test_aggregation_modes():
    row0, row1 = per_token(0.2, 0.28)
    expected = {
        "token-mean": (sum(row0) + sum(row1)) / 5,
        "seq-mean-token-mean": (sum(row0) / 3 + sum(row1) / 2) / 2,
        "seq-mean-token-sum-norm": (sum(row0) / 3 + sum(row1) / 3) / 2,  # longest completion: 3 tokens
    }
    for mode, value in expected.items():
        out = build_loss("grpo", clip_high=0.28, aggregation=mode)(inputs())
        assert out.loss.item() == pytest.approx(value, abs=1e-6), mode
    dr = build_loss("grpo", clip_high=0.28, aggregation="seq-mean-token-sum-norm", max_completion_length=8)
    assert dr(inputs()).loss.item() == pytest.approx((sum(row0) + sum(row1)) / 8 / 2, abs=1e-6)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batches_with_whole_batch_totals_add_up_to_the_batch_loss(mode):
    loss = build_loss("grpo", aggregation=mode)
    whole = loss(inputs()).loss
    totals = BatchTotals.of(MASK)
    parts = sum(loss(LossInputs(LOGP[i:i + 1], MASK[i:i + 1], OLD[i:i + 1], advantages=ADV[i:i + 1],
                                totals=totals)).loss for i in range(2))
    assert parts.item() == pytest.approx(whole.item(), abs=1e-6)


def test_without_old_logprobs_the_gradient_is_the_policy_gradient():
    x = inputs(old_logprobs=None)
    out = build_loss("grpo")(x)
    assert out.loss.item() == pytest.approx(-(1.0 * 3 - 2.0 * 2) / 5)  # ratio 1: -Σ A_i n_i / Σ n_i
    out.loss.backward()
    assert torch.allclose(x.logprobs.grad, -ADV.unsqueeze(-1) * MASK / 5)


def test_kl_estimators_by_hand():
    logp, ref = torch.tensor([[-1.0]]), torch.tensor([[-1.5]])
    assert get_kl("k1")(logp, ref).item() == pytest.approx(0.5)
    assert get_kl("k2")(logp, ref).item() == pytest.approx(0.125)
    assert get_kl("k3")(logp, ref).item() == pytest.approx(E(-0.5) + 0.5 - 1)
    assert get_kl("k3")(ref, ref).item() == 0.0


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_as_loss_term(estimator):
    ref = torch.tensor([[-1.1, -0.7, -2.0], [-0.5, -1.2, -9.0]])
    base = build_loss("grpo")(inputs()).loss.item()
    out = build_loss("grpo", kl_coef=0.1, kl_estimator=estimator)(inputs(ref_logprobs=ref))
    kl = get_kl(estimator)(LOGP, ref)
    token_mean_kl = float((kl * MASK).sum() / 5)
    assert out.loss.item() == pytest.approx(base + 0.1 * token_mean_kl, abs=1e-6)
    assert out.stats["kl"].item() == pytest.approx(token_mean_kl, abs=1e-6)


def test_kl_in_reward():
    rewards = kl_penalized_rewards(torch.tensor([1.0, 0.0]), LOGP, OLD, MASK, coef=0.5, estimator="k1")
    assert rewards.tolist() == pytest.approx([1.0 - 0.5 * (0.2 + 0 - 1.0), 0.0 - 0.5 * (0 - 0.2)])


def test_entropy_is_logged_and_only_enters_the_loss_with_a_coefficient():
    entropy = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    plain = build_loss("grpo")(inputs(entropy=entropy))
    assert plain.stats["entropy"].item() == pytest.approx(15 / 5)
    assert plain.loss.item() == pytest.approx(build_loss("grpo")(inputs()).loss.item())
    bonus = build_loss("grpo", entropy_coef=0.01)(inputs(entropy=entropy))
    assert bonus.loss.item() == pytest.approx(plain.loss.item() - 0.01 * 3.0, abs=1e-6)


def test_gspo_uses_one_sequence_ratio_and_its_gradient():
    loss = build_loss("gspo", clip_low=10.0, clip_high=10.0)  # no clipping: check the raw objective
    x = inputs()
    out = loss(x)
    s0, s1 = E((0.2 + 0 - 1.0) / 3), E((0 - 0.2) / 2)  # exp(mean token log-ratio)
    assert out.loss.item() == pytest.approx((-1.0 * s0 + 2.0 * s1) / 2, abs=1e-6)
    out.loss.backward()
    # d/dlogp_t of -(1/G) A_i s_i = -(1/G) A_i s_i / |y_i| on every token of sequence i
    expected = torch.tensor([[-s0 / 3 / 2] * 3, [2 * s1 / 2 / 2] * 2 + [0.0]])
    assert torch.allclose(x.logprobs.grad, expected, atol=1e-6)


def test_gspo_clips_whole_sequences():
    x = inputs()
    out = build_loss("gspo")(x)  # default 3e-4 / 4e-4: both sequence ratios are far outside
    s0, s1 = E(-0.8 / 3), E(-0.1)
    assert out.loss.item() == pytest.approx((-1.0 * s0 + 2.0 * (1 - 3e-4)) / 2, abs=1e-6)
    out.loss.backward()
    assert x.logprobs.grad[1].abs().sum() == 0  # clipped: no gradient for sequence 1
    assert x.logprobs.grad[0].abs().sum() > 0  # A > 0 and s < 1: min() keeps the unclipped term


def test_group_advantages():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.3, 0.3, 0.3])
    adv = group_advantages(rewards, group_size=3, eps=0.0)
    std = math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2)  # unbiased (n - 1)
    assert adv[:3].tolist() == pytest.approx([2 / 3 / std, -1 / 3 / std, -1 / 3 / std])
    assert adv[3:].tolist() == [0.0, 0.0, 0.0]  # all-equal group: exactly 0
    no_std = group_advantages(rewards, group_size=3, scale_std=False)
    assert no_std[:3].tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3])
    assert group_advantages(torch.tensor([5.0]), group_size=1).tolist() == [0.0]


def test_group_advantages_leave_a_skipped_sample_out_of_its_groups_statistics():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.5])  # the third sample's reward failed and was skipped
    adv = group_advantages(rewards, group_size=4, eps=0.0, scored=torch.tensor([True, True, False, True]))
    # scored 1, 0, 0.5: mean 0.5, unbiased std sqrt((0.25 + 0.25 + 0) / 2) = 0.5 (with the skipped sample as a
    # 0.0 sibling the mean would be 0.375); the skipped sample itself gets 0
    assert adv.tolist() == pytest.approx([1.0, -1.0, 0.0, 0.0])
    no_std = group_advantages(rewards, group_size=4, scale_std=False, scored=torch.tensor([True, True, False, True]))
    assert no_std.tolist() == pytest.approx([0.5, -0.5, 0.0, 0.0])
    one_scored = group_advantages(torch.tensor([2.0, float("nan")]), group_size=2, scored=torch.tensor([True, False]))
    assert one_scored.tolist() == [0.0, 0.0]  # no baseline: nothing to learn (a skipped sample may hold NaN)


def test_group_advantages_reject_bad_input():
    with pytest.raises(ValueError, match="divisible by group_size"):
        group_advantages(torch.zeros(5), group_size=3)
    with pytest.raises(ValueError, match="non-finite rewards at samples \\[1\\]"):
        group_advantages(torch.tensor([0.0, float("nan")]), group_size=2)

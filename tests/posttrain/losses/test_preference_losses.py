"""SFT, DPO, BCO (pair), MPO, Bradley-Terry and SigLIP against hand-computed values."""

import math

import pytest
import torch

from posttrain.losses import LossInputs, SigLIPLoss, build_loss, siglip_loss


def logsig(x):
    return -math.log1p(math.exp(-x))


# Two pairs, rows deliberately out of order: rejected of pair 7, chosen of pair 7, chosen of pair 3, rejected of 3.
LOGP = torch.tensor([[-2.0, -3.0, 0.0], [-1.0, -2.0, 0.0], [-0.5, -0.5, -1.0], [-4.0, 0.0, 0.0]])
REF = torch.tensor([[-2.5, -2.0, 0.0], [-2.0, -2.0, 0.0], [-1.0, -1.0, -0.5], [-3.0, 0.0, 0.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
CHOSEN = torch.tensor([False, True, True, False])
GROUPS = torch.tensor([7, 7, 3, 3])
# Sequence log-ratios (policy - reference, summed over the mask):
#   pair 7: chosen (-3) - (-4) = 1.0, rejected (-5) - (-4.5) = -0.5
#   pair 3: chosen (-2) - (-2.5) = 0.5, rejected (-4) - (-3) = -1.0
CHOSEN_LR = {7: 1.0, 3: 0.5}
REJECTED_LR = {7: -0.5, 3: -1.0}


def inputs(**kw):
    base = dict(logprobs=LOGP.clone().requires_grad_(True), mask=MASK, ref_logprobs=REF, chosen=CHOSEN,
                group_ids=GROUPS)
    base.update(kw)
    return LossInputs(**base)


def test_sft_is_token_mean_nll_over_the_mask():
    out = build_loss("sft")(LossInputs(LOGP, MASK))
    assert out.loss.item() == pytest.approx((2 + 3 + 1 + 2 + 0.5 + 0.5 + 1 + 4) / 8)
    per_seq = build_loss("sft", aggregation="seq-mean-token-mean")(LossInputs(LOGP, MASK))
    assert per_seq.loss.item() == pytest.approx((2.5 + 1.5 + 2 / 3 + 4) / 4)


def test_dpo_sigmoid():
    beta = 0.1
    out = build_loss("dpo", beta=beta)(inputs())
    expected = -sum(logsig(beta * (CHOSEN_LR[g] - REJECTED_LR[g])) for g in (7, 3)) / 2
    assert out.loss.item() == pytest.approx(expected, abs=1e-6)
    assert out.stats["reward_accuracy"].item() == 1.0
    assert out.stats["reward_margin"].item() == pytest.approx(beta * (1.5 + 1.5) / 2)


def test_bco_pair_form():
    beta = 0.5
    out = build_loss("bco_pair", beta=beta)(inputs())
    expected = sum(-logsig(beta * CHOSEN_LR[g]) - logsig(-beta * REJECTED_LR[g]) for g in (7, 3)) / 2
    assert out.loss.item() == pytest.approx(expected, abs=1e-6)


def test_mpo_is_the_weighted_sum_of_its_parts():
    beta = 0.2
    x = inputs()
    mpo = build_loss("mpo", beta=beta)(x).loss
    dpo = build_loss("dpo", beta=beta)(inputs()).loss
    bco = build_loss("bco_pair", beta=beta)(inputs()).loss
    sft_chosen = (1 + 2 + 0.5 + 0.5 + 1) / 5  # over all 5 chosen tokens of the batch, not per sequence
    assert mpo.item() == pytest.approx(0.8 * dpo.item() + 0.2 * bco.item() + 1.0 * sft_chosen, abs=1e-6)
    weighted = build_loss("mpo", beta=beta, w_preference=1.0, w_quality=0.0, w_generation=0.5)(inputs()).loss
    assert weighted.item() == pytest.approx(dpo.item() + 0.5 * sft_chosen, abs=1e-6)
    mpo.backward()  # rejected rows only get preference gradient, chosen rows also the SFT one
    assert x.logprobs.grad[3, 0].item() != 0 and x.logprobs.grad[3, 1].item() == 0


def test_unpaired_preference_rows_are_rejected():
    with pytest.raises(ValueError, match="exactly one chosen and one rejected"):
        build_loss("dpo")(inputs(chosen=torch.tensor([True, True, True, False])))


def test_preference_losses_need_reference_logprobs():
    with pytest.raises(ValueError, match="needs \\['ref_logprobs'\\]"):
        build_loss("dpo")(inputs(ref_logprobs=None))


def test_bradley_terry():
    scores = torch.tensor([0.5, 2.0, -1.0, 1.0])  # pair 7: 2.0 vs 0.5; pair 3: -1.0 vs 1.0 (wrong way round)
    out = build_loss("bradley_terry")(LossInputs(torch.zeros(4, 1), torch.ones(4, 1), scores=scores,
                                                 chosen=CHOSEN, group_ids=GROUPS))
    assert out.loss.item() == pytest.approx(-(logsig(1.5) + logsig(-2.0)) / 2, abs=1e-6)
    assert out.stats["rm_accuracy"].item() == 0.5


def test_bradley_terry_with_an_sft_term_adds_the_chosen_rows_token_mean_nll():
    scores = torch.tensor([0.5, 2.0, -1.0, 1.0])
    logprobs = torch.tensor([[-1.0, -2.0], [-3.0, -4.0], [-5.0, -6.0], [-7.0, -8.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    out = build_loss("bradley_terry", sft_weight=0.5)(LossInputs(logprobs, mask, scores=scores, chosen=CHOSEN,
                                                                 group_ids=GROUPS))
    chosen_rows = [i for i in range(4) if CHOSEN[i]]
    tokens = [(i, t) for i in chosen_rows for t in range(2) if mask[i, t]]
    nll = -sum(logprobs[i, t].item() for i, t in tokens) / len(tokens)
    assert out.stats["sft"].item() == pytest.approx(nll)
    assert out.loss.item() == pytest.approx(-(logsig(1.5) + logsig(-2.0)) / 2 + 0.5 * nll, abs=1e-6)
    with pytest.raises(ValueError, match="sft_weight must be >= 0"):
        build_loss("bradley_terry", sft_weight=-1.0)


def test_siglip_sigmoid_loss_by_hand():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    expected = -(logsig(2.0) + logsig(1.0) + logsig(-0.5) + logsig(3.0)) / 2
    assert siglip_loss(logits).item() == pytest.approx(expected, abs=1e-6)
    module = SigLIPLoss()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # normalised embeddings, matching pairs: logits = 10 * I - 10
    assert module(x, x).item() == pytest.approx(-(2 * logsig(0.0) + 2 * logsig(10.0)) / 2, abs=1e-5)

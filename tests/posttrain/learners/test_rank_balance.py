"""FLOPs-based rank balancing: the cost model counts the model's own matrices, the assignment is LPT with equal
row counts, groups stay whole, and the imbalance it reports is computed by hand."""

import pytest
import torch
from torch import nn

from keye_vl import KeyeForConditionalGeneration, KeyeVLConfig
from posttrain.learners.batch import TrainBatch, VisionLayout
from posttrain.learners.rank_balance import (CostModel, balanced_order, imbalance, inverse, row_costs,
                                             vision_patches_per_row)


def linear_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


def test_cost_model_counts_the_models_own_matrices():
    config = KeyeVLConfig.from_preset("keye-tiny")
    model = KeyeForConditionalGeneration(config)
    cost = CostModel.from_config(config)
    assert cost.text_params == linear_weights(model.model) + model.lm_head.weight.numel()
    merge = config.vision_config.spatial_merge_size
    tower = linear_weights(model.visual.vision_model.encoder)
    assert cost.vision_params == tower + linear_weights(model.mlp_AR) // merge**2
    # one 4-token row without images, by hand: 3 x (2 N T + 4 L W T^2)
    assert cost.row_flops(4, []) == 3 * (2 * cost.text_params * 4 + 4 * cost.text_attention * 16)


def test_lpt_balances_with_equal_row_counts():
    costs = [10.0, 9.0, 1.0, 1.0, 8.0, 1.0, 1.0, 1.0]
    before = imbalance(costs, list(range(8)), 2)
    assert before == pytest.approx(21 / 16)  # ranks cost 21 and 11, mean 16
    order = balanced_order(costs, [[i] for i in range(8)], 2)
    assert sorted(order) == list(range(8))
    assert {frozenset(order[:4]), frozenset(order[4:])} == {frozenset({0, 2, 3, 5}), frozenset({1, 4, 6, 7})}
    # 10 -> rank 0, 9 -> rank 1, 8 -> rank 1 (lighter), the 1s fill rank 0 to its 4 rows: 13 and 19, the best
    # split with 4 rows each
    assert imbalance(costs, order, 2) == pytest.approx(19 / 16)
    reordered = torch.tensor(costs)[torch.tensor(order)]
    assert reordered[inverse(order)].tolist() == costs


def test_groups_stay_whole_or_the_order_is_kept():
    costs = [5.0, 5.0, 1.0, 1.0, 4.0, 4.0, 1.0, 1.0]
    units = [[0, 1], [2, 3], [4, 5], [6, 7]]
    order = balanced_order(costs, units, 2)
    # pairs cost 10, 2, 8, 2: 10 -> rank 0, 8 -> rank 1, 2 -> rank 1, 2 -> rank 0; pairs never split
    assert {frozenset(order[:4]), frozenset(order[4:])} == {frozenset({0, 1, 6, 7}), frozenset({2, 3, 4, 5})}
    assert balanced_order([1.0] * 6, [[0, 1, 2], [3], [4], [5]], 2) == [0, 1, 2, 3, 4, 5]
    assert balanced_order([1.0] * 6, [[0, 1, 2, 3], [4], [5]], 2) is None  # 4 rows cannot fit a 3-row shard


def test_image_rows_cost_their_patches():
    layout = VisionLayout(image_token_id=7, video_token_id=8, merge_size=2)
    ids = torch.tensor([[1, 7, 7, 2, 0, 0], [1, 2, 3, 4, 5, 6], [7, 7, 7, 7, 7, 2]])
    attn = (ids > 0).long()
    attn[1] = 1
    grids = torch.tensor([[1, 2, 2], [1, 2, 2], [1, 4, 2], [1, 2, 2]])  # 4, 4, 8, 4 patches: 1, 1, 2, 1 tokens
    batch = TrainBatch(ids, attn, attn.clone(), pixel_values=torch.zeros(20, 3, 2, 2), image_grid_thw=grids)
    assert vision_patches_per_row(batch, layout) == [[4, 4], [], [8, 4]]
    cost = CostModel(text_params=100, text_attention=10, vision_params=50, vision_attention=5)
    flops = row_costs(batch, layout, cost)
    assert flops[1] == 3 * (2 * 100 * 6 + 4 * 10 * 36)
    assert flops[0] == 3 * (2 * 100 * 4 + 4 * 10 * 16 + 2 * (2 * 50 * 4 + 4 * 5 * 16))

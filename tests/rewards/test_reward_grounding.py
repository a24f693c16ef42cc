"""Grounding rewards with IoU values computed by hand, optimal matching, points; counting and choice."""

from __future__ import annotations

import itertools
import random

import pytest

from rewards import grounding
from rewards.choice import choice_reward, read_choice
from rewards.counting import counting_reward, read_count
from rewards.grounding import box_iou, iou_reward, matched_iou, matched_points, point_reward
from rewards.sample import Sample


@pytest.mark.parametrize(("a", "b", "iou"), [
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),             # identical
    ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),           # disjoint
    ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),            # touching edges: zero-area overlap
    ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),        # half shifted: 50 / (100 + 100 - 50)
    ([0, 0, 10, 10], [0, 0, 5, 5], 25 / 100),          # contained quarter
    ([0, 0, 10, 10], [5, 5, 15, 15], 25 / 175),        # corner overlap
    ([100, 200, 300, 400], [200, 300, 400, 500], 10000 / 70000),  # 100x100 overlap of two 200x200 boxes
    ([0, 0, 0, 10], [0, 0, 10, 10], 0.0),              # degenerate box
])
def test_box_iou_by_hand(a, b, iou):
    assert box_iou(a, b) == pytest.approx(iou)
    assert box_iou(b, a) == pytest.approx(iou)


def test_objects_are_matched_regardless_of_order():
    gold = [[0, 0, 10, 10], [50, 50, 60, 60]]
    assert matched_iou(list(reversed(gold)), gold) == 1.0


def test_matching_is_optimal_not_greedy():
    # IoU matrix: p0-g0 = 0.5 (best single pair), p0-g1 = 1/3, p1-g0 = 1/3, p1-g1 = 0.
    # Greedy takes p0-g0 then p1-g1: (0.5 + 0) / 2 = 0.25; optimal pairs p0-g1, p1-g0: (1/3 + 1/3) / 2 = 1/3.
    gold = [[0, 0, 10, 10], [10, 0, 20, 10]]
    predicted = [[5, 0, 15, 10], [-5, 0, 5, 10]]
    assert box_iou(predicted[0], gold[0]) == pytest.approx(1 / 3)
    assert box_iou(predicted[0], gold[1]) == pytest.approx(1 / 3)
    assert box_iou(predicted[1], gold[0]) == pytest.approx(1 / 3)
    assert box_iou(predicted[1], gold[1]) == 0.0
    assert matched_iou(predicted, gold) == pytest.approx(1 / 3)
    assert grounding.best_matching_score([[0.5, 1 / 3], [1 / 3, 0.0]]) == pytest.approx(2 / 3)
    assert grounding.best_matching_score([[0.9, 0.8], [0.85, 0.1]]) == pytest.approx(1.65)


def test_missing_and_extra_boxes_count_zero():
    gold = [[0, 0, 10, 10]]
    assert matched_iou([[0, 0, 10, 10], [50, 50, 60, 60]], gold) == 0.5   # one exact + one spurious
    assert matched_iou([[0, 0, 10, 10]], gold + [[50, 50, 60, 60]]) == 0.5  # one of two found
    assert matched_iou([], gold) == 0.0


def test_exact_assignment_agrees_with_brute_force():
    rng = random.Random(0)
    for _ in range(200):
        n, m = rng.randint(1, 5), rng.randint(1, 5)
        scores = [[rng.random() for _ in range(m)] for _ in range(n)]
        if n <= m:
            best = max(sum(scores[i][p[i]] for i in range(n)) for p in itertools.permutations(range(m), n))
        else:
            best = max(sum(scores[p[j]][j] for j in range(m)) for p in itertools.permutations(range(n), m))
        assert grounding.best_matching_score(scores) == pytest.approx(best)


def test_iou_reward_reads_keye_boxes_from_the_answer():
    completion = ("<think>the cat is left</think><answer><|object_ref_start|>cat<|object_ref_end|>"
                  "<|box_start|>[[0,0,10,10]]<|box_end|></answer>")
    sample = Sample(prompt="Find the cat /think", completion=completion, ground_truth="[[5,0,15,10]]")
    assert iou_reward(sample) == pytest.approx(1 / 3)
    flat = Sample(prompt="Find it /no_think", completion="[[0,0,10,10]]", ground_truth=[0, 0, 10, 10])
    assert iou_reward(flat) == 1.0


def test_boxes_in_reasoning_do_not_count():
    completion = "<think>[[0,0,10,10]]</think><answer>none</answer>"
    assert iou_reward(Sample(prompt="Find /think", completion=completion, ground_truth=[[0, 0, 10, 10]])) == 0.0


def test_iou_without_gold_boxes_is_an_error():
    with pytest.raises(ValueError, match="gold boxes"):
        iou_reward(Sample(prompt="x", completion="[[0,0,1,1]]", ground_truth="a cat"))


def test_points_in_boxes():
    boxes = [[0, 0, 10, 10], [40, 40, 60, 60]]
    assert matched_points([[5, 5], [50, 50]], boxes) == 1.0
    assert matched_points([[5, 5], [6, 6]], boxes) == 0.5      # two points in one box hit it once
    assert matched_points([[10, 10]], boxes[:1]) == 1.0          # edges count
    assert matched_points([[11, 5]], boxes[:1]) == 0.0
    sample = Sample(prompt="point /no_think", completion="<|point_start|>[[5,5]]<|point_end|>", ground_truth=boxes)
    assert point_reward(sample) == 0.5


@pytest.mark.parametrize(("completion", "gold", "expected"), [
    ("There are 4 birds.", 4, 1.0),
    ("There are four birds.", "4", 1.0),
    ("<think>1, 2, 3</think><answer>\\boxed{3}</answer>", 3, 1.0),
    ("<think>I count 3</think><answer>5</answer>", 3, 0.0),   # the reasoning's count is not the answer
    ("About 3.5", 3, 0.0),
    ("I see 12 cars", 13, 0.0),
    ("no idea", 2, 0.0),
])
def test_counting(completion, gold, expected):
    assert counting_reward(Sample(prompt="How many? /think", completion=completion, ground_truth=gold)) == expected


def test_read_count():
    assert read_count("1,024 stars") == 1024
    assert read_count("twenty") == 20


@pytest.mark.parametrize(("text", "letters"), [
    ("B", {"B"}), ("(C)", {"C"}), ("D.", {"D"}), ("The answer is (A).", {"A"}), ("answer: a", {"A"}),
    ("B. red", {"B"}), ("I pick (E) because", {"E"}), ("A, C", {"A", "C"}), ("answer: A and C", {"A", "C"}),
    ("A cat is red", None), ("none of them", None),
])
def test_read_choice(text, letters):
    assert read_choice(text) == (frozenset(letters) if letters else None)


def test_choice_reward():
    def score(completion, gold):
        return choice_reward(Sample(prompt="Which? /think", completion=completion, ground_truth=gold))

    assert score("<think>not A</think><answer>\\boxed{B}</answer>", "B") == 1.0
    assert score("<think>B?</think><answer>(A)</answer>", "B") == 0.0
    assert score("<think>x</think><answer>A, C</answer>", "C,A") == 1.0
    assert score("<think>x</think><answer>A</answer>", "A,C") == 0.0

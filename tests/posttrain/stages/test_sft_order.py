"""SFT batch order: seeded, resumable, and with group_by_length far less padding on mixed-length rows."""

import numpy as np

from posttrain.stages.sft import step_order


def padding(order, lengths):
    return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in order)


def test_group_by_length_cuts_padding_and_still_sees_every_row_once_per_epoch():
    rng = np.random.default_rng(0)
    lengths = [400 if rng.random() < 0.05 else int(rng.integers(10, 120)) for _ in range(1000)]  # a few agentic
    plain = step_order(1000, 32, 31, seed=3)
    grouped = step_order(1000, 32, 31, seed=3, lengths=lengths)
    assert sorted(np.concatenate(grouped).tolist()) == sorted(np.concatenate(plain).tolist())  # same epoch rows
    assert padding(grouped, lengths) < 0.3 * padding(plain, lengths)
    again = step_order(1000, 32, 62, seed=3, lengths=lengths)
    assert all(np.array_equal(a, b) for a, b in zip(grouped, again[:31]))  # a longer run replays the same start
    assert not all(np.array_equal(a, b) for a, b in zip(again[:31], again[31:]))  # each epoch reshuffled

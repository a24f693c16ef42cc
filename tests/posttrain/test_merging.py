"""Weight averaging: hand-computed values, per-group weights, and refusals of models that do not match."""

import pytest
import torch
from safetensors.torch import save_file

from posttrain.merging import merge_weights


def model_dir(path, **tensors):
    path.mkdir()
    save_file({k: torch.tensor(v, dtype=torch.float32) for k, v in tensors.items()}, str(path / "model.safetensors"))
    return path


def test_uniform_weighted_and_per_group_averages(tmp_path):
    a = model_dir(tmp_path / "a", **{"visual.w": [0.0, 2.0], "model.w": [4.0]})
    b = model_dir(tmp_path / "b", **{"visual.w": [2.0, 6.0], "model.w": [8.0]})
    uniform = merge_weights([a, b])
    assert uniform["visual.w"].tolist() == [1.0, 4.0] and uniform["model.w"].tolist() == [6.0]
    weighted = merge_weights([a, b], weights=[3, 1])
    assert weighted["model.w"].tolist() == [5.0]  # 0.75 * 4 + 0.25 * 8
    grouped = merge_weights([a, b], weights=[3, 1], group_weights={"visual": [0, 1]})
    assert grouped["visual.w"].tolist() == [2.0, 6.0] and grouped["model.w"].tolist() == [5.0]


def test_models_that_differ_are_refused(tmp_path):
    a = model_dir(tmp_path / "a", **{"model.w": [1.0, 2.0]})
    b = model_dir(tmp_path / "b", **{"model.w": [1.0]})
    c = model_dir(tmp_path / "c", **{"model.v": [1.0, 2.0]})
    with pytest.raises(ValueError, match=r"model.w is \[2\] in .*a but \[1\] in .*b"):
        merge_weights([a, b])
    with pytest.raises(ValueError, match=r"missing \['model.w'\], extra \['model.v'\]"):
        merge_weights([a, c])
    with pytest.raises(ValueError, match="weights has 1 entries for 2 models"):
        merge_weights([a, a], weights=[1])

"""Model merging: a weighted average of N models' weights (Keye-VL averages models annealed on different data).

`merged[name] = sum_k w_k * model_k[name]`, with the weights normalised to sum to 1, per module group
(`visual`, `mlp_AR`, `model`, `lm_head`) when `group_weights` gives that group its own. Models must have the same
tensor names and shapes (the same architecture): anything else is refused, naming the first difference.
Averaging is done in float32 and cast back to each tensor's dtype.

What else exists and why it is not here (yet): model soups' greedy variant (add a model only if held-out
accuracy improves) needs an evaluation in the loop, which the merge stage's own evaluation could drive;
TIES-merging (trim small deltas, elect a sign, merge agreeing deltas) and DARE work on task vectors relative to
a base and pay off when the parents were fine-tuned for different tasks far from the base, unlike anneals from
one stage-2 model; model_stock picks the interpolation weight from the angle between fine-tuned deltas. All take
a base model; mergekit implements them for LLMs and could be applied to a Keye directory's `model.*` part.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

GROUPS = ("visual", "mlp_AR", "model", "lm_head")


def normalised(weights: list[float] | None, n: int, what: str) -> list[float]:
    """Weights summing to 1 (uniform when None).

    >>> normalised([1, 3], 2, "weights")
    [0.25, 0.75]
    """
    weights = [1.0] * n if weights is None else [float(w) for w in weights]
    if len(weights) != n:
        raise ValueError(f"merge: {what} has {len(weights)} entries for {n} models; give one per model")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"merge: {what} must be non-negative with a positive sum, got {weights}")
    return [w / sum(weights) for w in weights]


def tensor_index(model_dir: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, file) over a directory's safetensors files."""
    index = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            for name in f.keys():
                index[name] = (tuple(f.get_slice(name).get_shape()), str(file))
    if not index:
        raise FileNotFoundError(f"merge: {model_dir} has no .safetensors weights")
    return index


def check_compatible(indexes: list[dict], dirs: list[Path]) -> None:
    first = indexes[0]
    for index, directory in zip(indexes[1:], dirs[1:]):
        missing, extra = sorted(set(first) - set(index)), sorted(set(index) - set(first))
        if missing or extra:
            raise ValueError(f"merge: {directory} has different tensors from {dirs[0]}: missing {missing[:3]}, "
                             f"extra {extra[:3]}; only models of one architecture can be averaged")
        shapes = [n for n in first if first[n][0] != index[n][0]]
        if shapes:
            n = shapes[0]
            raise ValueError(f"merge: {n} is {list(first[n][0])} in {dirs[0]} but {list(index[n][0])} in "
                             f"{directory}; only models of one configuration can be averaged")


def merge_weights(model_dirs: list[Path], weights: list[float] | None = None,
                  group_weights: dict[str, list[float]] | None = None) -> dict[str, torch.Tensor]:
    """The merged state dict, one tensor at a time (no model is ever fully materialised twice)."""
    indexes = [tensor_index(d) for d in model_dirs]
    check_compatible(indexes, model_dirs)
    default = normalised(weights, len(model_dirs), "weights")
    per_group = {g: normalised(w, len(model_dirs), f"group_weights.{g}") for g, w in (group_weights or {}).items()}
    merged = {}
    for name in indexes[0]:
        w = per_group.get(name.split(".")[0], default)
        total = None
        for k, index in enumerate(indexes):
            with safe_open(index[name][1], "pt") as f:
                tensor = f.get_tensor(name)
            total = tensor.float() * w[k] if total is None else total + tensor.float() * w[k]
        merged[name] = total.to(tensor.dtype)
    return merged

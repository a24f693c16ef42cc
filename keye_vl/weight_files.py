"""Safetensors files of a model directory, read and rewritten by tensor name, without building the model.

Why not `from_pretrained` + `save_pretrained`: a stage that trains only part of a model (stage 0 trains
`visual.*`) must leave every other tensor bit-identical, in its stored dtype and shard, and must not load an 8B
decoder to replace 0.5B of vision weights. Both single-file (`model.safetensors`) and sharded
(`model.safetensors.index.json`) directories are handled.
Boundary: files and tensors only; nothing here knows what the tensors mean.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def weight_shards(model_dir: str | Path) -> dict[str, Path]:
    """Tensor name -> the shard file holding it."""
    model_dir = Path(model_dir)
    if (model_dir / INDEX).is_file():
        weight_map = json.loads((model_dir / INDEX).read_text())["weight_map"]
        return {name: model_dir / shard for name, shard in weight_map.items()}
    if (model_dir / SINGLE).is_file():
        with safe_open(model_dir / SINGLE, framework="pt") as f:
            return {name: model_dir / SINGLE for name in f.keys()}
    raise FileNotFoundError(f"{model_dir} has neither {SINGLE} nor {INDEX}: give a model directory with weights "
                            f"(`posttrain model init` writes one; a config-only 8B directory needs the public weights)")


def load_prefixed(model_dir: str | Path, prefix: str) -> dict[str, torch.Tensor]:
    """Every tensor whose name starts with `prefix`, prefix removed (e.g. `visual.` -> the vision tower)."""
    by_shard: dict[Path, list[str]] = {}
    for name, shard in weight_shards(model_dir).items():
        if name.startswith(prefix):
            by_shard.setdefault(shard, []).append(name)
    out = {}
    for shard, names in by_shard.items():
        with safe_open(shard, framework="pt") as f:
            out.update({name[len(prefix):]: f.get_tensor(name) for name in names})
    return out


def copy_with_replaced(source: str | Path, out: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Copy the model directory `source` to `out`, with the named tensors replaced (cast to each stored dtype).

    Files (config, tokenizer, processor) and shards that hold none of the names are copied byte for byte.
    Every name must already exist with the same shape: a replacement never adds or reshapes a tensor.
    """
    source, out = Path(source), Path(out)
    shards = weight_shards(source)
    unknown = sorted(set(tensors) - set(shards))
    if unknown:
        raise KeyError(f"{source} holds no tensors named {unknown[:5]} (of {len(unknown)}); replacements must name "
                       f"tensors the directory already has")
    out.mkdir(parents=True, exist_ok=True)
    touched = {shards[name] for name in tensors}
    for item in source.iterdir():
        if item.is_file() and item not in touched:
            shutil.copy2(item, out / item.name)
    for shard in touched:
        _rewrite_shard(shard, out / shard.name, tensors)


def _rewrite_shard(shard: Path, target: Path, tensors: dict[str, torch.Tensor]) -> None:
    with safe_open(shard, framework="pt") as f:
        metadata = f.metadata() or {"format": "pt"}
        state = {name: f.get_tensor(name) for name in f.keys()}
    for name, stored in state.items():
        if name in tensors:
            new = tensors[name]
            if tuple(new.shape) != tuple(stored.shape):
                raise ValueError(f"{shard.name}: {name} is stored as {tuple(stored.shape)} but the replacement is "
                                 f"{tuple(new.shape)}; a stage may change values, never shapes")
            state[name] = new.detach().to("cpu", stored.dtype).contiguous()
    save_file(state, str(target), metadata=metadata)

"""Checkpoints of a learner: written to a hidden temporary directory and renamed when complete, so a crash
leaves either the previous checkpoint or the new one, never a half-written one.

Layout of `<dir>`:
    model/              Hugging Face format (save_pretrained of the full, gathered weights) plus the tokenizer /
                        processor files of the source model directory: loadable by rollout engines and later stages
    deepspeed/state/    DeepSpeed engine state: fp32 weights, optimizer (ZeRO partitions, one file per rank),
                        LR scheduler
    rng/rank<r>.pt      Python, NumPy and torch RNG states per rank
    trainer_state.json  step, skipped steps, world size, ZeRO stage, the caller's data position; written last

Resume restores all of it, so the losses after `load` equal those of a run that never stopped. DeepSpeed's
partitioned optimizer state ties a checkpoint to its world size and ZeRO stage; `load` checks both.
Boundary: files and collectives only; the learner owns the training state.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

if TYPE_CHECKING:
    from posttrain.learners.learner import Learner

STATE_FILE = "trainer_state.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def export_parameters(learner: Learner, bucket_bytes: int, dtype: torch.dtype | None = None,
                      trainable_only: bool = False, rank0_only: bool = False) -> list[dict[str, Tensor]]:
    """Full CPU copies of the parameters, bucketed; gathered bucket by bucket under ZeRO-3 (collective)."""
    return list(iter_parameters(learner, bucket_bytes, dtype, trainable_only, rank0_only))


def iter_parameters(learner: Learner, bucket_bytes: int, dtype: torch.dtype | None = None,
                    trainable_only: bool = False, rank0_only: bool = False) -> Iterator[dict[str, Tensor]]:
    """`export_parameters` one bucket at a time, so a caller that hands each on (into Ray's object store) never
    holds a second copy of the whole model."""
    keep = not rank0_only or learner.rank == 0
    if learner.config.zero_stage != 3 and not keep:
        return
    for chunk in gathered_chunks(learner, bucket_bytes, trainable_only):
        if keep:
            yield {n: p.detach().to("cpu", dtype or p.dtype).clone() for n, p in chunk}


def gathered_chunks(learner: Learner, bucket_bytes: int, trainable_only: bool = False) -> Iterator[list]:
    """[(name, full parameter)] chunks of about bucket_bytes, each whole while the caller holds it: under
    ZeRO-3 a chunk is gathered (a collective every rank must join) and freed when the caller asks for the next."""
    import deepspeed

    zero3 = learner.config.zero_stage == 3
    named = [(n, p) for n, p in learner.module.named_parameters() if p.requires_grad or not trainable_only]
    for chunk in _chunks(named, bucket_bytes, zero3):
        gather = deepspeed.zero.GatheredParameters([p for _, p in chunk], modifier_rank=None) if zero3 \
            else nullcontext()
        with gather:
            yield chunk


def full_parameter_specs(learner: Learner) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(name, full shape, dtype) of every parameter, also where ZeRO-3 holds only a partition."""
    return [(n, tuple(getattr(p, "ds_shape", p.shape)), p.dtype) for n, p in learner.module.named_parameters()]


def chunk_specs(learner: Learner, bucket_bytes: int, dtype: torch.dtype | None = None) -> list[list[tuple]]:
    """[(name, full shape, dtype)] per chunk of `gathered_chunks` (same split, nothing gathered): what a receiver
    must expect, bucket by bucket, when each chunk is sent in `dtype` (None: the parameters' own)."""
    named = list(learner.module.named_parameters())
    return [[(n, tuple(getattr(p, "ds_shape", p.shape)), dtype or p.dtype) for n, p in chunk]
            for chunk in _chunks(named, bucket_bytes, learner.config.zero_stage == 3)]


def _chunks(named: list, bucket_bytes: int, zero3: bool) -> list[list]:
    chunks, current, size = [], [], 0
    for name, param in named:
        nbytes = (param.ds_numel if zero3 else param.numel()) * param.element_size()
        if current and size + nbytes > bucket_bytes:
            chunks.append(current)
            current, size = [], 0
        current.append((name, param))
        size += nbytes
    return chunks + ([current] if current else [])


def _persistent_buffers(module: torch.nn.Module) -> dict[str, Tensor]:
    out = {}
    for prefix, sub in module.named_modules():
        for name, buf in sub._buffers.items():
            if buf is not None and name not in sub._non_persistent_buffers_set:
                out[f"{prefix}.{name}" if prefix else name] = buf.detach().cpu().clone()
    return out


def _save_model(learner: Learner, out: Path) -> None:
    """HF-format weights (rank 0 writes; every rank joins the ZeRO-3 gathers) plus tokenizer/processor files."""
    state = {k: v for bucket in export_parameters(learner, 1 << 30, rank0_only=True) for k, v in bucket.items()}
    if learner.rank != 0:
        return
    state.update(_persistent_buffers(learner.module))
    learner.module.save_pretrained(out, state_dict=state)
    source = learner.config.model
    if source and Path(source).is_dir():
        for item in Path(source).iterdir():
            if item.is_file() and not item.name.endswith(WEIGHT_SUFFIXES) and not (out / item.name).exists():
                shutil.copy2(item, out / item.name)


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(learner: Learner, directory: Path, data_state: dict) -> Path:
    directory = directory.resolve()
    tmp = directory.parent / f".{directory.name}.tmp"
    if learner.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # a crashed earlier attempt
        (tmp / "rng").mkdir(parents=True)
    dist.barrier()
    _save_model(learner, tmp / "model")
    learner.engine.save_checkpoint(str(tmp / "deepspeed"), tag="state", save_latest=False)
    torch.save(_rng_state(), tmp / "rng" / f"rank{learner.rank}.pt")
    dist.barrier()
    if learner.rank == 0:
        state = {"step": learner.step, "skipped_steps": learner.skipped_steps, "world_size": learner.world_size,
                 "zero_stage": learner.config.zero_stage, "data_state": data_state,
                 "config": learner.config.model_dump(mode="json")}
        with open(tmp / STATE_FILE, "w") as f:
            json.dump(state, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _swap_in(tmp, directory)
    dist.barrier()
    return directory


def _swap_in(tmp: Path, directory: Path) -> None:
    """Replace `directory` by `tmp` with renames only: at every instant one complete checkpoint exists."""
    old = directory.parent / f".{directory.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(learner: Learner, directory: Path) -> dict:
    state_path = directory / STATE_FILE
    if not state_path.is_file():
        raise FileNotFoundError(f"{state_path} not found: {directory} is not a complete learner checkpoint "
                                f"(checkpoints appear only once fully written; pass the checkpoint directory itself)")
    state = json.loads(state_path.read_text())
    for key, now in (("world_size", learner.world_size), ("zero_stage", learner.config.zero_stage)):
        if state[key] != now:
            raise ValueError(f"{directory} was saved with {key}={state[key]} but this learner has {key}={now}; "
                             f"resume with the same {key} (or start a new run from {directory}/model)")
    path, _ = learner.engine.load_checkpoint(str(directory / "deepspeed"), tag="state", load_optimizer_states=True,
                                             load_lr_scheduler_states=True)
    if path is None:
        raise FileNotFoundError(f"DeepSpeed state missing under {directory}/deepspeed/state")
    _set_rng_state(torch.load(directory / "rng" / f"rank{learner.rank}.pt", weights_only=False))
    learner.step, learner.skipped_steps = state["step"], state["skipped_steps"]
    dist.barrier()
    return state["data_state"]

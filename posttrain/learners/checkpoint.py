"""Checkpoints of a learner: written to a hidden temporary directory and renamed when complete, so a crash
leaves either the previous checkpoint or the new one, never a half-written one.

Layout of `<dir>`:
    model/              Hugging Face format (save_pretrained of the full, gathered weights; with `learner.lora`
                        the merged ones) plus the tokenizer / processor files of the source model directory:
                        loadable by rollout engines and later stages
    model/adapter/      with `learner.lora` only: peft's adapter directory (PeftModel.from_pretrained reads it)
    deepspeed/state/    DeepSpeed engine state: fp32 weights, optimizer (ZeRO partitions, one file per rank),
                        LR scheduler; with `learner.lora` the trainable parameters only (the frozen base weights
                        are the ones `learner.model` names, reloaded by the resuming learner)
    rng/rank<r>.pt      Python, NumPy and torch RNG states per rank
    trainer_state.json  step, skipped steps, world size, ZeRO stage, the caller's data position; written last

Resume restores all of it, so the losses after `load` equal those of a run that never stopped. DeepSpeed's
partitioned optimizer state ties a checkpoint to its world size and ZeRO stage, and an adapter checkpoint to its
`learner.lora`; `load` checks all three.
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

from posttrain.learners import lora

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
    """[(name, full tensor)] chunks of about bucket_bytes of the engines' view of the weights (`lora.engine_weights`:
    the parameters, or with adapters the merged ones), each whole while the caller holds it: under ZeRO-3 a
    chunk's sources are gathered (a collective every rank must join) and freed when the caller asks for the next."""
    import deepspeed

    zero3 = learner.config.zero_stage == 3
    weights = [w for w in lora.engine_weights(learner.module) if w.trainable or not trainable_only]
    for chunk in _chunks(weights, bucket_bytes):
        sources = [p for w in chunk for p in w.sources]
        gather = deepspeed.zero.GatheredParameters(sources, modifier_rank=None) if zero3 else nullcontext()
        with gather:
            yield [(w.name, w.value()) for w in chunk]


def full_parameter_specs(learner: Learner) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(name, full shape, dtype) of every weight the engines get, also where ZeRO-3 holds only a partition."""
    return [(w.name, w.shape, w.dtype) for w in lora.engine_weights(learner.module)]


def chunk_specs(learner: Learner, bucket_bytes: int, dtype: torch.dtype | None = None) -> list[list[tuple]]:
    """[(name, full shape, dtype)] per chunk of `gathered_chunks` (same split, nothing gathered): what a receiver
    must expect, bucket by bucket, when each chunk is sent in `dtype` (None: the parameters' own)."""
    return [[(w.name, w.shape, dtype or w.dtype) for w in chunk]
            for chunk in _chunks(lora.engine_weights(learner.module), bucket_bytes)]


def _chunks(weights: list[lora.EngineWeight], bucket_bytes: int) -> list[list[lora.EngineWeight]]:
    chunks, current, size = [], [], 0
    for weight in weights:
        if current and size + weight.nbytes > bucket_bytes:
            chunks.append(current)
            current, size = [], 0
        current.append(weight)
        size += weight.nbytes
    return chunks + ([current] if current else [])


def _persistent_buffers(module: torch.nn.Module) -> dict[str, Tensor]:
    """Under the base model's names (peft's wrappers removed: the merged model has none)."""
    out = {}
    for prefix, sub in module.named_modules():
        for name, buf in sub._buffers.items():
            plain = lora.plain_name(f"{prefix}.{name}" if prefix else name)
            if buf is not None and name not in sub._non_persistent_buffers_set and plain is not None:
                out[plain] = buf.detach().cpu().clone()
    return out


def _save_model(learner: Learner, out: Path) -> None:
    """HF-format weights (rank 0 writes; every rank joins the ZeRO-3 gathers), merged with adapters (then also the
    adapter in out/adapter), plus tokenizer/processor files."""
    state = {k: v for bucket in export_parameters(learner, 1 << 30, rank0_only=True) for k, v in bucket.items()}
    if lora.is_lora(learner.module):
        _save_adapter(learner, out / "adapter")
    if learner.rank != 0:
        return
    plain = lora.base_model(learner.module)
    state.update(_persistent_buffers(plain))
    plain.save_pretrained(out, state_dict=state)
    source = learner.config.model
    if source and Path(source).is_dir():
        for item in Path(source).iterdir():
            if item.is_file() and not item.name.endswith(WEIGHT_SUFFIXES) and not (out / item.name).exists():
                shutil.copy2(item, out / item.name)


def _save_adapter(learner: Learner, out: Path) -> None:
    """peft's adapter directory, written by rank 0 (every rank joins the ZeRO-3 gather of the adapter)."""
    import deepspeed

    named = lora.adapter_parameters(learner.module)
    zero3 = learner.config.zero_stage == 3
    with deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None) if zero3 else nullcontext():
        if learner.rank == 0:
            lora.save_adapter(learner.module, out, {n: p.detach().cpu().clone() for n, p in named})


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
    learner.engine.save_checkpoint(str(tmp / "deepspeed"), tag="state", save_latest=False,
                                   exclude_frozen_parameters=learner.config.lora is not None)
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
    _check_same_lora(directory, state["config"].get("lora"), learner.config)
    path, _ = learner.engine.load_checkpoint(str(directory / "deepspeed"), tag="state", load_optimizer_states=True,
                                             load_lr_scheduler_states=True,
                                             load_module_strict=learner.config.lora is None)
    if path is None:
        raise FileNotFoundError(f"DeepSpeed state missing under {directory}/deepspeed/state")
    _set_rng_state(torch.load(directory / "rng" / f"rank{learner.rank}.pt", weights_only=False))
    learner.step, learner.skipped_steps = state["step"], state["skipped_steps"]
    dist.barrier()
    return state["data_state"]


def _check_same_lora(directory: Path, saved: dict | None, config) -> None:
    """An adapter checkpoint holds only the trainable tensors, so it resumes only onto the same adapters (over the
    base `learner.model`); a full-weight one only without adapters."""
    now = config.lora.model_dump(mode="json") if config.lora is not None else None
    if saved != now:
        raise ValueError(f"{directory} was saved with learner.lora={saved} but this learner has learner.lora={now}; "
                         f"resume with the same learner.lora (or start a new run from {directory}/model, the "
                         f"merged weights)")

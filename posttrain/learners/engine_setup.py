"""Building blocks of a learner's DeepSpeed engine: process group, model loading, freezing, parameter groups,
learning-rate schedule and the DeepSpeed config dict.

Boundary: nothing here runs a training step; `learner.py` does. CPU facts (DESIGN.md): gloo backend, an
optimizer with no compiled op (`torch_adam`), and the one-time shm comm-op build cached in a stable
TORCH_EXTENSIONS_DIR so tests and CI reuse it (a build lock left there by a kill is cleared first:
`clear_stale_build_locks`). GPU facts: NCCL backend, one device per rank (the GPU Ray
reserved for the actor), and reductions of CPU-side values moved to that device (`all_reduce`).
"""

from __future__ import annotations

import fnmatch
import math
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from posttrain.learners.learner_config import LearnerConfig

# A build lock older than this was left by a killed build: the shm comm op builds in 25-40 s on 2 cores, so ten
# minutes leaves room for a slow or loaded machine while never letting a learner hang on a dead lock.
BUILD_LOCK_MAX_AGE_S = 600.0


def extension_cache() -> str:
    """Pin TORCH_EXTENSIONS_DIR (unless set) so DeepSpeed's JIT-built comm op (~25-40 s) is built once."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "keye-posttrain" / "torch_extensions"
    return os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(default))


def clear_stale_build_locks(root: str | Path, max_age_s: float = BUILD_LOCK_MAX_AGE_S, poll_s: float = 1.0) -> None:
    """Run before DeepSpeed JIT-builds an op: torch's FileBaton waits silently and forever on the `lock` file of a
    build (root/<op>/lock) that a kill interrupted. A lock older than `max_age_s` is removed with a warning; a
    younger one is waited on, saying so once, until its build ends or it grows stale."""
    for lock in Path(root).glob("*/lock"):
        _wait_for_build_lock(lock, max_age_s, poll_s)


def _wait_for_build_lock(lock: Path, max_age_s: float, poll_s: float) -> None:
    said = False
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:  # the build finished
            return
        if age > max_age_s:
            lock.unlink(missing_ok=True)
            print(f"warning: removed {lock}, a DeepSpeed op build lock {age / 60:.0f} min old: a build killed "
                  f"midway left it (a build takes under a minute); the op is built again now",
                  file=sys.stderr, flush=True)
            return
        if not said:
            print(f"waiting for {lock}: another process is building DeepSpeed's {lock.parent.name} op (lock "
                  f"{age:.0f} s old); if no build is running, delete that file (it is removed anyway once "
                  f"{max_age_s / 60:.0f} min old)", file=sys.stderr, flush=True)
            said = True
        time.sleep(poll_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_process_group(device: torch.device) -> None:
    """Join (or create) the torch.distributed group from RANK/WORLD_SIZE/MASTER_* env.

    The backend follows the learner's device: NCCL for CUDA, gloo for CPU (every rank of a group gets the same
    kind of device from the placement). NCCL reduces only CUDA tensors, so the learner's own reductions go
    through `all_reduce` below, never on CPU tensors. A lone process without those variables becomes a group of
    one on a free local port.
    """
    import deepspeed
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    clear_stale_build_locks(extension_cache())
    if "RANK" not in os.environ:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1",
                          LOCAL_RANK="0")
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL binds the rank to its current device (barriers included)
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo", dist_init_required=True)


def default_device() -> torch.device:
    """A learner used outside a learner group (tests, one process): GPU LOCAL_RANK if CUDA is there, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def reserved_device(gpu_ids: list[str], cuda_available: bool, visible: str | None) -> torch.device:
    """A learner actor's device, from the GPUs Ray reserved for it (never a GPU it did not reserve).

    None reserved: the CPU. One: its position among CUDA_VISIBLE_DEVICES, which Ray sets to the reserved ids,
    so `cuda:0` in the actor (a fractional share of a colocated GPU reserves that one GPU too).
    """
    if not gpu_ids:
        return torch.device("cpu")
    if not cuda_available:
        raise RuntimeError(f"this learner reserved GPU {', '.join(gpu_ids)} but torch {torch.__version__} here has "
                           f"no CUDA: install a CUDA build of torch on the GPU nodes, or train on CPU with "
                           f"cluster.gpus_per_learner: 0")
    if len(gpu_ids) > 1:
        raise ValueError(f"a learner rank drives one GPU but was given {len(gpu_ids)} ({gpu_ids}); data "
                         f"parallelism is over ranks: set cluster.gpus_per_learner: 1 and raise cluster.num_learners")
    order = [v.strip() for v in visible.split(",")] if visible else None
    if order is None:
        return torch.device("cuda", int(gpu_ids[0]))
    if gpu_ids[0] not in order:
        raise RuntimeError(f"reserved GPU {gpu_ids[0]} is not among CUDA_VISIBLE_DEVICES={visible!r}")
    return torch.device("cuda", order.index(gpu_ids[0]))


def all_reduce(values: Tensor, op, device: torch.device) -> Tensor:
    """All-reduce on the learner's device and return a CPU copy: NCCL reduces only CUDA tensors, gloo takes
    CPU ones, so the learner's CPU-side totals and stats travel to the device for the collective and back."""
    import torch.distributed as dist

    on_device = values.to(device, copy=True)  # never reduce the caller's tensor in place
    dist.all_reduce(on_device, op=op)
    return on_device.cpu()


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# bf16 compute over fp32 master weights, by DeepSpeed's own mechanism: its engine wraps the forward in
# torch.autocast itself. An autocast opened around the engine instead is switched off inside it on CUDA
# (DeepSpeed 0.19 `runtime/torch_autocast.py`: autocast on outside, its `torch_autocast` section off -> it runs
# `torch.autocast(enabled=False)`), so the "bf16" learner trained in fp32. No lower-precision modules: gradients
# and ZeRO-3 gathers stay fp32, as the fp32-master-weight design says (bf16 communication would halve the traffic
# and change the numerics; `learner.deepspeed` can ask for it).
BF16_AUTOCAST = {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}


def use_bf16_autocast(config: LearnerConfig) -> bool:
    if config.precision != "auto":
        return config.precision == "bf16-autocast"
    return torch.cuda.is_bf16_supported() if torch.cuda.is_available() else cpu_has_bf16()


def load_model(config: LearnerConfig, path: str | None = None, ds_config: dict | None = None) -> nn.Module:
    """A model from a Hugging Face directory; importing keye_vl registers Keye-VL with the Auto classes.

    Under ZeRO-3 (`ds_config` given) the weights are partitioned while loading (transformers' zero.Init path),
    so no rank ever holds the whole model: what makes an 8B model fit beside its optimizer state.
    """
    import keye_vl.modeling  # noqa: F401  (Auto-class registration)
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.integrations import HfDeepSpeedConfig

    path = path or config.model
    if path is None:
        raise ValueError("learner.model is not set: give a model directory (or pass a module to Learner)")
    if not Path(path, "config.json").is_file():
        raise FileNotFoundError(f"{path}/config.json not found: learner.model must be a saved model directory "
                                f"(`posttrain model init` or save_pretrained writes one)")
    cls = AutoModelForSequenceClassification if config.model_class == "sequence_classification" \
        else AutoModelForCausalLM
    zero3 = HfDeepSpeedConfig(ds_config) if ds_config and config.zero_stage == 3 else None  # noqa: F841 (alive
    return cls.from_pretrained(path, dtype=torch.float32)                                   # while loading)


def freeze_groups(model: nn.Module, groups: list[str]) -> None:
    """requires_grad=False on every parameter under the named modules: top-level groups (`visual`, `mlp_AR`,
    `model`, ...), dotted paths (`model.embed_tokens`) or fnmatch patterns over module paths (`model.layers.1?`
    freezes layers 10-19). A pretrained LM trained on a small CPU budget keeps its lower layers frozen."""
    paths = dict(model.named_modules())
    for group in groups:
        matched = [path for path in paths if path and fnmatch.fnmatchcase(path, group)]
        if not matched:
            top = sorted(dict(model.named_children()))
            raise ValueError(f"learner.freeze names {group!r}, which matches no module of this model; its "
                             f"top-level groups are {top} (dotted paths and patterns such as "
                             f"'model.layers.1?' reach deeper)")
        for path in matched:
            for param in paths[path].parameters():
                param.requires_grad_(False)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters, decay on matrices only (norm weights and biases are not decayed)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:  # a ZeRO-3 partitioned parameter keeps its real shape in ds_shape
            (decay if len(getattr(param, "ds_shape", param.shape)) >= 2 else no_decay).append(param)
    if not decay and not no_decay:
        raise ValueError("every parameter is frozen (learner.freeze): nothing to train")
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


@dataclass
class WarmupDecay:
    """LR multiplier: linear warmup to 1 over `warmup` steps, then cosine/linear decay to `floor` at `total`.

    A callable object (not a lambda) so LambdaLR's state_dict saves it and resume restores it.
    Step k (0-based) of warmup uses (k + 1) / warmup, so the first update is not wasted at lr 0.
    """

    warmup: int
    total: int | None
    kind: str
    floor: float

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant" or self.total is None:
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if self.kind == "cosine" else 1.0 - progress
        return self.floor + (1.0 - self.floor) * shape


def schedule(config: LearnerConfig) -> WarmupDecay:
    return WarmupDecay(config.warmup_steps, config.total_steps, config.schedule, config.min_lr_ratio)


def deepspeed_config(config: LearnerConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config. Accumulation is caller-owned (`managed_gradient_accumulation: false`): the learner
    calls backward once per micro-batch and `step()` once per update. Stage 0 clips in the learner (DeepSpeed's
    stage-0 path does not report the norm); ZeRO stages clip in their optimizer."""
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": config.grad_accum_steps,
        "train_batch_size": config.grad_accum_steps * world_size,
        "managed_gradient_accumulation": False,
        "optimizer": {"type": "AdamW", "params": {
            "lr": config.lr, "betas": list(config.betas), "eps": config.eps, "weight_decay": config.weight_decay,
            "torch_adam": True}},
        "gradient_clipping": config.grad_clip if config.zero_stage > 0 else 0.0,
        "zero_optimization": {"stage": config.zero_stage, "overlap_comm": False},
        "steps_per_print": 2**62,
        "wall_clock_breakdown": False,
    }
    if config.zero_stage == 3:  # DeepSpeed's own prefetch and persistence defaults, gathers overlapping compute
        ds["zero_optimization"].update(overlap_comm=True)
    if use_bf16_autocast(config):
        ds["torch_autocast"] = BF16_AUTOCAST
    _merge(ds, config.deepspeed)
    return ds


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value

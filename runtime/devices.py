"""The GPUs a Ray actor reserved, and hiding the ones it did not.

In current Ray an actor that reserves no GPU still sees every GPU of its node (Ray leaves CUDA_VISIBLE_DEVICES
alone when it assigns none), so a CPU-only actor on a GPU node would initialise CUDA on device 0, beside a
learner that reserved it. Actors call `hide_unreserved_gpus()` first, before anything touches CUDA. An actor
that did reserve GPUs finds them in CUDA_VISIBLE_DEVICES, set by Ray: its first GPU is `cuda:0` in-process.

Outside a Ray actor (the driver, tests, `posttrain generate`) nothing is hidden: the process owns its devices.
"""

from __future__ import annotations

import os


def in_ray_actor() -> bool:
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


def reserved_gpu_ids() -> list[str]:
    """Ray's ids of the GPUs this actor reserved ([] outside an actor or when it reserved none)."""
    import ray

    return [str(i) for i in ray.get_gpu_ids()] if in_ray_actor() else []


def hide_unreserved_gpus() -> list[str]:
    """Inside an actor that reserved no GPU, make CUDA see none; returns the reserved ids."""
    ids = reserved_gpu_ids()
    if in_ray_actor() and not ids:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    return ids


def torch_device(gpus: float, who: str) -> str:
    """An actor's torch device: "cuda" if it reserved `gpus` (an error naming `who` and what is missing if torch sees
    no CUDA device: never a silent CPU fall-back), else "cpu", with every GPU hidden (`hide_unreserved_gpus`)."""
    ids = hide_unreserved_gpus()
    import torch

    if gpus and not torch.cuda.is_available():
        raise RuntimeError(f"{who} reserved {gpus:g} GPU(s) (Ray GPU ids {ids}, CUDA_VISIBLE_DEVICES="
                           f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}) but torch {torch.__version__} sees no CUDA "
                           f"device: install a CUDA build of torch on the GPU nodes, or give it gpus: 0")
    return "cuda" if gpus else "cpu"


def visible_devices() -> dict:
    """Where this process runs (Ray node id, pid) and what it may use: for logs, the placement tests and the
    memory benchmarks."""
    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    return {"node": node, "pid": os.getpid(), "gpu_ids": reserved_gpu_ids(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}

"""Weight sync on one host without copies: the engine's parameters are views of a file in shared memory.

The object-store transport copies every tensor four times (learner clone, pickle into the store, unpickle,
`copy_` into the engine). Where learner rank 0 and a rollout worker share a machine, that is wasted work: here
the learner copies each parameter once into a file under /dev/shm, and the worker points its parameters at
views of that file (`param.data = view`), copying nothing.

The file holds two slots. Version v is written into slot v % 2, so the learner can write v while the engines
still generate with v - 1 from the other slot (the pipelined step); the swap itself is only a change of
pointers. A slot is rewritten two versions later, by when every engine has moved on: a sync is a barrier.

`SharedWeightsLayout` is the plan both sides agree on (names, shapes, dtypes, byte offsets); it is small and
travels through Ray like any argument. Linux only (it needs /dev/shm).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import torch

ALIGN = 64  # bytes: every view starts on a cache line, which also satisfies any dtype's alignment
SHM_DIR = Path("/dev/shm")


@dataclass(frozen=True)
class SlotEntry:
    name: str
    offset: int  # bytes from the start of a slot
    shape: tuple[int, ...]
    dtype: str  # e.g. "float32": a torch dtype's name, so the layout pickles without torch objects

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.torch_dtype.itemsize


@dataclass(frozen=True)
class SharedWeightsLayout:
    path: str
    slot_bytes: int
    entries: tuple[SlotEntry, ...]

    @classmethod
    def plan(cls, path: str | Path, specs: Iterable[tuple[str, tuple[int, ...], torch.dtype]]) -> "SharedWeightsLayout":
        """Offsets for tensors of these names, shapes and dtypes, in this order."""
        entries, offset = [], 0
        for name, shape, dtype in specs:
            entry = SlotEntry(name, offset, tuple(shape), str(dtype).removeprefix("torch."))
            entries.append(entry)
            offset += -(-entry.nbytes // ALIGN) * ALIGN
        return cls(str(path), offset, tuple(entries))

    def create(self) -> "SharedWeightsLayout":
        """Allocate the file (both slots, zero-filled). A file left by a killed run is
        replaced by a new one (a new inode), never truncated under a process that may still map it."""
        if not Path(self.path).parent.is_dir():
            raise OSError(f"shared-memory weight sync needs {Path(self.path).parent} (Linux); use "
                          f"rollout.weight_sync: object_store")
        Path(self.path).unlink(missing_ok=True)
        with open(self.path, "wb") as f:
            try:  # reserve the pages now: a tmpfs that fills up later would kill the writer with SIGBUS
                os.posix_fallocate(f.fileno(), 0, 2 * self.slot_bytes)
            except OSError as error:
                f.close()
                self.remove()
                raise OSError(f"shared-memory weight sync: cannot reserve {2 * self.slot_bytes / 2**20:.0f} MiB in "
                              f"{Path(self.path).parent} ({error.strerror}); enlarge it (docker: --shm-size) or use "
                              f"rollout.weight_sync: object_store") from None
        return self

    def remove(self) -> None:
        Path(self.path).unlink(missing_ok=True)
        _mapping.cache_clear()


def slot_views(layout: SharedWeightsLayout, version: int) -> dict[str, torch.Tensor]:
    """{name: tensor} viewing slot `version % 2` of the file: writing to a view writes the shared memory."""
    memory = _mapping(layout.path, 2 * layout.slot_bytes, os.stat(layout.path).st_ino)
    base = (version % 2) * layout.slot_bytes
    return {e.name: memory[base + e.offset: base + e.offset + e.nbytes].view(e.torch_dtype).view(e.shape)
            for e in layout.entries}


def write_slot(layout: SharedWeightsLayout, version: int, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
    """Copy tensors into version's slot (the learner side); returns the bytes written."""
    views = slot_views(layout, version)
    written = 0
    with torch.no_grad():
        for name, tensor in named_tensors:
            view = views[name]
            if view.shape != tensor.shape:
                raise ValueError(f"shared weights: {name} has shape {tuple(tensor.shape)}, the layout "
                                 f"{tuple(view.shape)}")
            view.copy_(tensor.detach())
            written += view.numel() * view.element_size()
    return written


@lru_cache(maxsize=4)
def _mapping(path: str, size: int, inode: int) -> torch.Tensor:
    """One MAP_SHARED mapping per file per process (the inode keys a recreated file apart from the old one)."""
    return torch.from_file(path, shared=True, size=size, dtype=torch.uint8)


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

/dev/shm is shared by every local user, so the file lives in a private directory (mode 0700, an unpredictable
name made by `private_weights_path`) and is created only as a new file (O_EXCL, O_NOFOLLOW, mode 0600): no other
user can read the weights, pre-create the file or plant a symlink in its place. Readers open it with O_NOFOLLOW
and map it only if it is a regular file of their own uid. The directory's name carries its creator's pid, so
one left by a `kill -9` is removed at the next start (`remove_stale_directories`).
"""

from __future__ import annotations

import math
import mmap
import os
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import torch

ALIGN = 64  # bytes: every view starts on a cache line, which also satisfies any dtype's alignment
SHM_DIR = Path("/dev/shm")
PREFIX = "keye-weights-"  # a private directory is PREFIX<pid>-<pid namespace>-<random>


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
        """Allocate the file (both slots, zero-filled) as a new file of mode 0600. An existing path is refused,
        never reused or truncated: a file or symlink someone else put there must not become the weights file."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise FileExistsError(f"shared-memory weight sync: {self.path} already exists; the weights file is "
                                  f"only ever created new (give a fresh path, see private_weights_path)") from None
        try:
            os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask
            os.posix_fallocate(fd, 0, 2 * self.slot_bytes)  # reserve now: a full tmpfs later would be a SIGBUS
        except OSError as error:
            self.remove()
            raise OSError(f"shared-memory weight sync: cannot reserve {2 * self.slot_bytes / 2**20:.0f} MiB in "
                          f"{Path(self.path).parent} ({error.strerror}); enlarge it (docker: --shm-size) or use "
                          f"rollout.weight_sync: object_store") from None
        finally:
            os.close(fd)
        return self

    def remove(self) -> None:
        """Delete the file, and its directory when it is a private one (`private_weights_path`)."""
        path = Path(self.path)
        path.unlink(missing_ok=True)
        if path.parent.name.startswith(PREFIX):
            shutil.rmtree(path.parent, ignore_errors=True)  # ours (0700): nothing else lives in it
        _mapping.cache_clear()


def private_weights_path(root: str | Path = SHM_DIR) -> Path:
    """A weights file path in a new private directory under root (mode 0700, unpredictable name carrying this
    process's pid); this user's directories whose process is gone (a `kill -9`) are removed first."""
    root = Path(root)
    if not root.is_dir():
        raise OSError(f"shared-memory weight sync needs {root} (Linux); use rollout.weight_sync: object_store")
    remove_stale_directories(root)
    return Path(tempfile.mkdtemp(dir=root, prefix=f"{PREFIX}{os.getpid()}-{_pid_namespace()}-")) / "weights"


def remove_stale_directories(root: str | Path = SHM_DIR) -> list[Path]:
    """Remove this user's private weights directories under root whose creating process is gone; returns them.
    Only directories of this pid namespace are judged: a pid from another container's namespace says nothing."""
    removed = []
    for directory in Path(root).glob(f"{PREFIX}*"):
        owner = _creator(directory)
        if owner is None or _alive(owner):
            continue
        shutil.rmtree(directory, ignore_errors=True)
        if not directory.exists():
            removed.append(directory)
            print(f"shared-memory weight sync: removed {directory}, left by process {owner} (gone)",
                  file=sys.stderr, flush=True)
    return removed


def _creator(directory: Path) -> int | None:
    """The pid that made this directory, if it is this user's, a real directory and of this pid namespace."""
    try:
        info = directory.lstat()
        pid, namespace = directory.name.removeprefix(PREFIX).split("-")[:2]
    except (OSError, ValueError):
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or namespace != _pid_namespace():
        return None
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        return True
    return True


def _pid_namespace() -> str:
    """This process's pid namespace (the inode of /proc/self/ns/pid): pids are only comparable within one."""
    return str(os.stat("/proc/self/ns/pid").st_ino)


def slot_views(layout: SharedWeightsLayout, version: int) -> dict[str, torch.Tensor]:
    """{name: tensor} viewing slot `version % 2` of the file: writing to a view writes the shared memory."""
    memory = _mapping(layout.path, 2 * layout.slot_bytes, os.lstat(layout.path).st_ino)
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
    """One MAP_SHARED mapping per file per process (the inode keys a recreated file apart from the old one).

    Opened with O_NOFOLLOW and checked on the open descriptor (what is mapped is what was checked): a symlink,
    a non-regular file or another user's file is refused, as is one shorter than the layout (a SIGBUS later)."""
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _check_own_file(path, os.fstat(fd), size, inode)
        memory = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)  # the mapping outlives the descriptor
    return torch.frombuffer(memory, dtype=torch.uint8)  # the tensor keeps the mmap object alive


def _check_own_file(path: str, info: os.stat_result, size: int, inode: int) -> None:
    """Only this uid can have made a file of this uid: so it is ours, not one planted by another local user."""
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(f"shared-memory weight sync: {path} is not a regular file of uid {os.getuid()} "
                              f"(uid {info.st_uid}, mode {stat.filemode(info.st_mode)}); refusing to map it. "
                              f"Someone else put it there: remove it and rerun, or use "
                              f"rollout.weight_sync: object_store")
    if info.st_ino != inode:
        raise PermissionError(f"shared-memory weight sync: {path} was replaced while it was opened; refusing it")
    if info.st_size < size:
        raise OSError(f"shared-memory weight sync: {path} holds {info.st_size} bytes, the layout needs {size}: "
                      f"it is not the file this layout was created with")

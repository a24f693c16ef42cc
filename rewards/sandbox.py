"""Run untrusted Python (agentic-mode code, code rewards) in a confined subprocess.

`run_code(code, images, limits)` (or `run_python(code, images, **limits)`) starts a fresh interpreter (``python -I``: no user site, no environment
variables read, the caller's directory not on the path) in a new temporary working directory, with a scrubbed
environment, and returns stdout, stderr, exit status and the image files the code wrote. Limits:
- CPU time, memory (address space), file size, open files: rlimits set in the child before any code runs;
- wall time: the parent kills the whole process group (and the cgroup) when it runs out;
- processes: one by default (forks and spawns blocked); more only where the kernel can count them: a pids
  cgroup when running as root (root ignores RLIMIT_NPROC), else RLIMIT_NPROC;
- network: a fresh network namespace (no interfaces up) where the OS allows one, and sockets blocked by the
  child's audit-hook policy in any case;
- files: the policy confines reads and writes to the working directory (reads of the Python installation
  excepted), so a secret beside the caller cannot be opened by relative or absolute path.
Input images are saved as ``input_<i>.png`` and pre-loaded as ``images`` (all, oldest first) and ``image``
(the newest: in an agentic turn, the one the model just made), with ``Image`` (PIL) imported. Images the code
writes come back as PIL images, their file names in `image_names`. Departures: no uid switch (the interpreter here lives in a root-only
directory) and no mount namespace; the audit-hook layer is an interpreter-level policy, not a kernel wall,
so run the trainer in a container where code comes from untrusted users. This module knows nothing about
chat modes or rewards: it runs code and reports.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from rewards.sandbox_child import MEMORY_EXIT

CHILD = str(Path(__file__).with_name("sandbox_child.py"))
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_CGROUP_ROOTS = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup")


class SandboxUnavailable(RuntimeError):
    """A requested limit cannot be enforced on this machine (never silently dropped)."""


@dataclass
class SandboxLimits:
    cpu_s: int = 10
    wall_s: float = 20.0
    memory_mb: int = 1024
    file_size_mb: int = 16
    max_processes: int = 1  # 1: no fork/spawn at all
    policy: bool = True  # the audit-hook layer (file, socket, subprocess, ctypes rules)
    output_bytes: int = 64 * 1024  # per stream returned


@dataclass
class SandboxResult:
    status: str  # ok | error | timeout | cpu_limit | memory_limit | file_size_limit | signal
    # (Python ignores SIGXFSZ, so an oversized write usually surfaces as an OSError: status "error")
    exit_code: int | None
    stdout: str
    stderr: str
    wall_s: float
    images: list = field(default_factory=list)  # PIL images the code wrote, fully loaded
    image_names: list[str] = field(default_factory=list)  # their paths relative to the working directory
    isolation: list[str] = field(default_factory=list)  # the layers that were active

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def run_code(code: str, images: list | None = None, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run `code` confined; see the module docstring.

    >>> run_code("print(6 * 7)").stdout
    '42\\n'
    """
    limits = limits or SandboxLimits()
    root = Path(tempfile.mkdtemp(prefix="keye-sandbox-"))
    work = root / "work"
    work.mkdir(mode=0o700)
    cgroup = None
    try:
        inputs = _save_inputs(images or [], work)
        cgroup, nproc, isolation = _process_limit(limits)
        flags = netns_flags()
        isolation += (["netns"] if flags else []) + (["policy"] if limits.policy else [])
        if not flags and not limits.policy:
            raise SandboxUnavailable("no network isolation: this machine allows no network namespace; keep "
                                     "SandboxLimits.policy=True so sockets are blocked")
        config = {"cgroup": cgroup, "unshare_flags": flags, "inputs": inputs, "policy": limits.policy,
                  "read_roots": _read_roots(),
                  "limits": {"cpu_s": int(limits.cpu_s), "memory_bytes": limits.memory_mb * 2**20,
                             "file_size_bytes": limits.file_size_mb * 2**20, "nproc": nproc,
                             "max_processes": limits.max_processes}}
        return _execute(code, config, work, root, limits, isolation, inputs)
    finally:
        if cgroup:
            _remove_cgroup(cgroup)
        shutil.rmtree(root, ignore_errors=True)


def run_python(code: str, images: list | None = None, **limits) -> SandboxResult:
    """`run_code` with the limits as keywords (``cpu_s=5, wall_s=10, ...``), as a recipe section gives them."""
    return run_code(code, images, SandboxLimits(**limits))


def _execute(code, config, work: Path, root: Path, limits: SandboxLimits, isolation, inputs) -> SandboxResult:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "KEYE_SANDBOX": json.dumps(config)}
    input_bytes = {name: (work / name).read_bytes() for name in inputs}
    start = time.perf_counter()
    with open(root / "stdout", "wb") as out, open(root / "stderr", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-I", "-B", "-u", CHILD], stdin=subprocess.PIPE, stdout=out,
                                stderr=err, cwd=work, env=env, start_new_session=True, close_fds=True)
        timed_out = False
        try:
            proc.stdin.write(code.encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the child died before reading: its stderr says why
        try:
            proc.wait(timeout=limits.wall_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill_group(proc.pid, config["cgroup"])
        proc.wait()
    wall = time.perf_counter() - start
    names, images = _collect_images(work, input_bytes)
    return SandboxResult(status=_status(proc.returncode, timed_out), exit_code=proc.returncode,
                         stdout=_read(root / "stdout", limits.output_bytes),
                         stderr=_read(root / "stderr", limits.output_bytes), wall_s=wall,
                         images=images, image_names=names, isolation=isolation)


def _status(code: int, timed_out: bool) -> str:
    if timed_out:
        return "timeout"
    if code == 0:
        return "ok"
    if code == MEMORY_EXIT:
        return "memory_limit"
    if code < 0:
        return {signal.SIGXCPU: "cpu_limit", signal.SIGXFSZ: "file_size_limit"}.get(-code, "signal")
    return "error"


def _read(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("\n[output truncated]" if len(data) > limit else "")


def _kill_group(pid: int, cgroup: str | None) -> None:
    """Kill everything the code started: its process group, and every task of its cgroup (forks that left
    the group with setsid are still in the cgroup)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if cgroup:
        _empty_cgroup(cgroup)


# ------------------------------------------------------------------------------------------ inputs/outputs
def _save_inputs(images: list, work: Path) -> list[str]:
    names = []
    for i, image in enumerate(images):
        name = f"input_{i}.png"
        if isinstance(image, (bytes, bytearray)):
            (work / name).write_bytes(bytes(image))
        elif isinstance(image, (str, os.PathLike)):
            shutil.copyfile(image, work / name)
        elif hasattr(image, "save"):
            image.save(work / name, format="PNG")
        else:
            raise TypeError(f"sandbox input image {i} is a {type(image).__name__}; pass PIL images, encoded "
                            f"bytes, or file paths")
        names.append(name)
    return names


def _collect_images(work: Path, inputs: dict[str, bytes], max_images: int = 32) -> tuple[list[str], list]:
    """(names, PIL images) of the image files under `work`: regular files only (a symlink could point at a
    secret), inputs only if the code changed them, and only what PIL can decode."""
    from PIL import Image

    names, found = [], []
    for dirpath, _, files in os.walk(work, followlinks=False):
        for name in sorted(files):
            path = Path(dirpath) / name
            if path.suffix.lower() not in IMAGE_SUFFIXES or path.is_symlink() or len(found) >= max_images:
                continue
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as f:
                data = f.read()
            rel = str(path.relative_to(work))
            if inputs.get(rel) == data:
                continue  # an input the code did not change
            try:
                image = Image.open(io.BytesIO(data))
                image.load()
            except Exception:  # noqa: BLE001 (not an image, whatever its name)
                continue
            names.append(rel)
            found.append(image)
    return names, found


def _read_roots() -> list[str]:
    """What the child may read besides its directory: the Python installation and public system data."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, "/usr/share", "/etc/localtime"}
    roots.update(sysconfig.get_paths().values())
    roots.update(site.getsitepackages())
    return sorted(roots)


# ------------------------------------------------------------------------------------------ kernel layers
@lru_cache(maxsize=1)
def netns_flags() -> int:
    """unshare() flags that give a child its own network namespace here (0: none is allowed)."""
    for flags in (CLONE_NEWNET, CLONE_NEWUSER | CLONE_NEWNET):
        probe = (f"import ctypes, os; os._exit(0 if ctypes.CDLL(None, use_errno=True).unshare({flags}) == 0 "
                 f"else 1)")
        if subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True).returncode == 0:
            return flags
    return 0


def _process_limit(limits: SandboxLimits) -> tuple[str | None, int | None, list[str]]:
    """(cgroup path, RLIMIT_NPROC value, layers) enforcing `max_processes`."""
    if limits.max_processes <= 1:
        if not limits.policy:
            raise SandboxUnavailable("max_processes=1 is enforced by the policy layer; keep policy=True or "
                                     "allow more processes")
        return None, None, ["no-fork"]
    if os.geteuid() != 0:
        return None, _user_tasks() + limits.max_processes, ["rlimit-nproc"]
    cgroup = _make_cgroup(limits.max_processes)
    if cgroup is None:
        raise SandboxUnavailable("running as root, which RLIMIT_NPROC does not limit, and no writable pids "
                                 "cgroup was found; use max_processes=1 or run as a normal user")
    return cgroup, None, ["pids-cgroup"]


def _user_tasks() -> int:
    """Threads of this user now (RLIMIT_NPROC counts them all, not only the sandbox's)."""
    uid, count = os.getuid(), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return count


def _make_cgroup(max_tasks: int) -> str | None:
    for base in _CGROUP_ROOTS:
        if not os.path.exists(os.path.join(base, "pids.max")) and base != _CGROUP_ROOTS[0]:
            continue
        path = os.path.join(base, f"keye-sandbox-{uuid.uuid4().hex[:12]}")
        try:
            os.mkdir(path)
            with open(os.path.join(path, "pids.max"), "w") as f:
                f.write(str(max_tasks))
            return path
        except OSError:
            if os.path.isdir(path):
                os.rmdir(path)
    return None


def _empty_cgroup(path: str) -> None:
    for _ in range(200):
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                pids = [int(p) for p in f.read().split()]
        except OSError:
            return
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def _remove_cgroup(path: str) -> None:
    _empty_cgroup(path)
    for _ in range(100):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)  # the last killed tasks are still being reaped

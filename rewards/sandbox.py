"""Run untrusted Python (agentic-mode code, code rewards) in a sandbox the kernel enforces.

`run_code(code, images, limits)` (or `run_python(code, images, **limits)`) runs the code in a fresh interpreter
under bubblewrap (Debian package ``bubblewrap``) and returns stdout, stderr, exit status and the images it
wrote. What the sandbox promises, each checked by an attack in ``tests/reliability/test_sandbox_attacks.py``:

- **nothing outlives the run**: the code is in its own pid namespace; when the run ends (exit, timeout, kill)
  its init dies and the kernel kills every descendant, ``setsid`` or double-forked ones included;
- **no processes** beyond ``max_processes`` (default 1: no fork, no spawn, no ``_posixsubprocess``): the
  kernel's RLIMIT_NPROC, counted in the run's own user namespace;
- **no view of the project or home**: a new mount namespace holding only, read-only, ``/usr``, the Python
  installation the toolkit runs on, a few files of ``/etc`` and the run's input images; the work directory
  ``/sandbox`` (a fresh tmpfs per run) is the only writable place, so no path, ``dir_fd``, ``chdir`` or
  symlink trick reaches anything else, and device nodes or FIFOs can be made only there (``/dev`` is
  bubblewrap's minimal one);
- **no network**: a new network namespace holding only its own loopback (the host's is not reachable);
- **no privilege**: the code runs as uid/gid 65534 (nobody) in a user namespace where only that id exists
  (started by root, it is 65534 outside too), with no capabilities and ``no_new_privs``;
- **no namespace of its own**: a user namespace made by the code would make it root there, free to mount a
  tmpfs past ``disk_mb`` and the memory limit. A seccomp filter (`sandbox_child.forbid_namespaces`) makes
  ``unshare``/``clone`` with CLONE_NEWUSER, ``setns`` and the mount calls fail with EPERM (``clone3`` with
  ENOSYS, so libc falls back to ``clone``); started by a normal user, bubblewrap's ``--disable-userns`` also
  sets the namespace's user-namespace count to its limit. Only x86_64 is filtered: elsewhere nothing runs;
- **bounded**: CPU time, address space, file size and open files are rlimits; wall time is enforced by
  killing the sandbox; stdout/stderr are cut at ``output_bytes``. Total disk is ``disk_mb``: ``/sandbox``
  is a tmpfs of that size (memory, not the host's disk; a write past it fails with ENOSPC and the run's
  status is ``disk_limit`` if the code then fails), so many files below the file-size limit cannot add up
  past it either (the number of empty files is bounded only by CPU time: bubblewrap sets no inode limit);
  images read back are regular files only (a FIFO named ``out.png`` is skipped, never opened for a blocking
  read), within ``image_bytes`` and ``image_pixels`` (checked from each header before decoding; PIL's
  process-wide ``MAX_IMAGE_PIXELS`` is not changed). The supervisor reads them after killing every process
  the code left, and sends them over its status pipe: the parent never opens a file the code made. A run
  that times out returns no images.
The audit-hook policy inside the interpreter (``policy=True``) stays as defence in depth: it turns honest
mistakes into clear messages, but it is not the boundary. Without bubblewrap `run_code` raises
`SandboxUnavailable` saying what to install; it never falls back to a weaker sandbox. ``unshare(1)`` is not a
fallback: it makes the namespaces but neither builds the read-only view, the bounded tmpfs nor the
die-with-parent link (each would be our own mount code, a second boundary to get right), so it cannot make
the same promises.

How each promise is checked (``tests/reliability/test_sandbox_attacks.py`` unless named): nothing outlives
the run (30 ``setsid`` children are gone on return); no processes (``_posixsubprocess.fork_exec`` and
``spawn`` get EAGAIN; a fork bomb with forks allowed is capped: ``tests/rewards/test_reward_sandbox.py``); no
view (a shell with processes allowed cannot read a project file or write to ``/tmp``/``/usr``; ``dir_fd``,
``chdir`` and relative-symlink tricks, ``mkfifo``/``mknod`` outside are refused); no network (a socket cannot
reach a host listener: test_reward_sandbox); no privilege (``id -u`` is 65534); no namespace of its own
(``unshare(CLONE_NEWUSER)`` by ctypes, ``os.unshare`` and raw ``clone`` get EPERM, a tmpfs mount is refused,
threads and subprocesses still start; as a normal user too); bounded (CPU, wall, memory,
file size: test_reward_sandbox; total disk: many files under the file-size limit stop at ``disk_mb`` and the
host's disk stays untouched; FIFO images, 13000x13000 PNG headers and the byte budget). Missing bubblewrap:
``tests/rewards/test_reward_sandbox.py`` checks the message.

Input images are saved as ``input_<i>.png`` and pre-loaded as ``images`` (all, oldest first) and ``image``
(the newest: in an agentic turn, the one the model just made), with ``Image`` (PIL) imported. Images the code
writes come back as PIL images, their file names in `image_names`. This module knows nothing about chat modes
or rewards: it runs code and reports.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from rewards.sandbox_child import MEMORY_EXIT

CHILD = str(Path(__file__).with_name("sandbox_child.py"))
CHILD_INSIDE = "/opt/keye/sandbox_child.py"
WORK_INSIDE = "/sandbox"
NOBODY = 65534
ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime")  # not passwd/group: no account data inside
INPUTS_INSIDE = "/opt/keye/inputs"
INSTALL_HINT = ("install the bubblewrap package, 0.8 or newer for --size and --disable-userns (Debian/Ubuntu: "
                "apt-get install -y bubblewrap; Fedora: dnf install bubblewrap; Arch: pacman -S bubblewrap), so "
                "that `bwrap` is on PATH; there is no weaker fallback")


class SandboxUnavailable(RuntimeError):
    """The kernel sandbox cannot be set up on this machine (never silently replaced by a weaker one)."""


@dataclass
class SandboxLimits:
    cpu_s: int = 10
    wall_s: float = 20.0
    memory_mb: int = 1024
    file_size_mb: int = 16  # per file (RLIMIT_FSIZE)
    disk_mb: int = 64  # all files together: the size of the work directory's tmpfs
    max_processes: int = 1  # 1: no fork/spawn at all (the kernel refuses them)
    open_files: int = 256
    policy: bool = True  # the audit-hook layer (defence in depth; the namespaces are the boundary)
    output_bytes: int = 64 * 1024  # per stream returned
    image_bytes: int = 32 * 2**20  # all images read back, together
    image_pixels: int = 16 * 2**20  # all images read back, together (checked from their headers)
    max_images: int = 32


@dataclass
class SandboxResult:
    status: str  # ok | error | timeout | cpu_limit | memory_limit | file_size_limit | disk_limit | signal
    # (Python ignores SIGXFSZ, so an oversized write usually surfaces as an OSError: status "error")
    exit_code: int | None
    stdout: str
    stderr: str
    wall_s: float
    images: list = field(default_factory=list)  # PIL images the code wrote, fully loaded
    image_names: list[str] = field(default_factory=list)  # their paths relative to the working directory
    isolation: list[str] = field(default_factory=list)  # the layers that were active
    skipped_images: list[str] = field(default_factory=list)  # "name: why" for image files not read back

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def run_code(code: str, images: list | None = None, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run `code` in the sandbox; see the module docstring.

    >>> run_code("print(6 * 7)").stdout
    '42\\n'
    """
    limits = limits or SandboxLimits()
    bwrap = bwrap_path()
    root = Path(tempfile.mkdtemp(prefix="keye-sandbox-"))
    inputs_dir = root / "inputs"  # read-only inside; the supervisor copies them into the work tmpfs
    inputs_dir.mkdir(mode=0o700)
    try:
        inputs = _save_inputs(images or [], inputs_dir)
        return _execute(bwrap, code, inputs_dir, root, limits, inputs)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_python(code: str, images: list | None = None, **limits) -> SandboxResult:
    """`run_code` with the limits as keywords (``cpu_s=5, wall_s=10, ...``), as a recipe section gives them."""
    return run_code(code, images, SandboxLimits(**limits))


def isolation_layers(limits: SandboxLimits) -> list[str]:
    layers = ["userns", "mountns", "pidns", "netns", "uid-nobody", "no-new-userns", "rlimits"]
    return layers + (["no-fork"] if limits.max_processes <= 1 else []) + (["policy"] if limits.policy else [])


def _execute(bwrap: str, code: str, inputs_dir: Path, root: Path, limits: SandboxLimits,
             inputs) -> SandboxResult:
    status_r, status_w = os.pipe()
    config = {"inputs": inputs, "inputs_dir": INPUTS_INSIDE, "policy": limits.policy, "read_roots": _read_roots(),
              "status_fd": status_w,
              "collect": {"image_bytes": limits.image_bytes, "max_images": limits.max_images, "entries": 1000},
              "drop_to_uid": NOBODY if os.geteuid() == 0 else None,
              "limits": {"cpu_s": int(limits.cpu_s), "memory_bytes": limits.memory_mb * 2**20,
                         "file_size_bytes": limits.file_size_mb * 2**20, "open_files": limits.open_files,
                         "max_processes": max(1, int(limits.max_processes))}}
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": WORK_INSIDE, "TMPDIR": WORK_INSIDE, "LANG": "C.UTF-8",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "KEYE_SANDBOX": json.dumps(config)}
    input_bytes = {name: (inputs_dir / name).read_bytes() for name in inputs}
    disk_bytes = limits.disk_mb * 2**20 + sum(map(len, input_bytes.values()))  # the inputs are not the code's
    command = [bwrap, *_bwrap_args(inputs_dir, disk_bytes), sys.executable, "-I", "-B", "-u", CHILD_INSIDE]
    reply: dict = {}
    reader = threading.Thread(target=_read_reply, args=(status_r, limits.image_bytes, reply), daemon=True)
    start = time.perf_counter()
    try:
        with open(root / "stdout", "wb") as out, open(root / "stderr", "wb") as err:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=err, env=env,
                                    pass_fds=(status_w,), start_new_session=True)
    except BaseException:
        os.close(status_r)
        raise
    finally:
        os.close(status_w)
    reader.start()  # read while the supervisor writes (it owns status_r now): a full pipe must not stall it
    timed_out = _feed_and_wait(proc, code, limits.wall_s)
    reader.join(timeout=5)
    wall = time.perf_counter() - start
    status = reply.get("status", {})
    names, images, skipped = decode_images(reply.get("files", []), input_bytes, limits)
    skipped = status.get("skipped", [])[:limits.max_images + 100] + skipped
    exit_code = status.get("exit", -status["signal"] if "signal" in status else proc.returncode)
    at_cpu_limit = status.get("cpu_s", 0) >= limits.cpu_s
    return SandboxResult(status=_status(exit_code, timed_out, status.get("disk_full", False), at_cpu_limit),
                         exit_code=exit_code,
                         stdout=_read(root / "stdout", limits.output_bytes),
                         stderr=_read(root / "stderr", limits.output_bytes), wall_s=wall, images=images,
                         image_names=names, isolation=isolation_layers(limits), skipped_images=skipped)


def _feed_and_wait(proc: subprocess.Popen, code: str, wall_s: float) -> bool:
    """Send the code, wait up to `wall_s`, then kill the sandbox (its pid namespace takes every process
    along). Returns whether the wall time ran out."""
    timed_out = False
    try:
        proc.stdin.write(code.encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the child died before reading: its stderr says why
    try:
        proc.wait(timeout=wall_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # bwrap outside; --die-with-parent ends the namespace's init
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    return timed_out


def _read_reply(fd: int, image_bytes: int, into: dict) -> None:
    """The supervisor's report (see `sandbox_child.report`): into["status"] the JSON record and into["files"]
    [(name, bytes)]; left empty when the sandbox was killed before it wrote it. Reads at most the image budget
    plus 1 MiB and drains the rest, so a confused writer can neither stall nor bloat the parent."""
    data, cap = bytearray(), image_bytes + 2**20
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while chunk := pipe.read(1 << 16):
            if len(data) < cap:
                data += chunk
    head, _, body = bytes(data).partition(b"\n")
    try:
        status = json.loads(head)
        files, offset = [], 0
        for name, size in status.pop("files"):
            files.append((str(name), body[offset:offset + int(size)]))
            offset += int(size)
        if offset > len(body):
            raise ValueError("short")
    except (ValueError, TypeError, KeyError):
        return
    into.update(status=status, files=files)


def _bwrap_args(inputs_dir: Path, disk_bytes: int) -> list[str]:
    """bubblewrap's namespaces and the read-only view: /usr, the Python installation, a few /etc files and the
    inputs, and a tmpfs of `disk_bytes` as the work directory, the only writable mount."""
    args = ["--unshare-all", "--die-with-parent", "--new-session", "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev"]
    if os.geteuid() == 0:
        args.remove("--unshare-all")  # root: the user namespace is made by the child, mapping nobody to nobody
        args[:0] = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    else:  # no nested user namespace (bubblewrap 0.8's --disable-userns needs an explicit --unshare-user)
        args += ["--unshare-user", "--disable-userns", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    for name in ("bin", "lib", "lib64", "sbin"):
        target = Path("/") / name
        if target.is_symlink():
            args += ["--symlink", os.readlink(target), str(target)]
        elif target.is_dir():
            args += ["--ro-bind", str(target), str(target)]
    for path in _python_roots():
        args += _traversable_parents(path) + ["--ro-bind", path, path]
    for path in ETC_FILES:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    return args + ["--ro-bind", CHILD, CHILD_INSIDE, "--ro-bind", str(inputs_dir), INPUTS_INSIDE,
                   "--perms", "0700", "--size", str(disk_bytes), "--tmpfs", WORK_INSIDE, "--chdir", WORK_INSIDE]


def _traversable_parents(path: str) -> list[str]:
    """Empty 0755 directories above a bind mount (bwrap would copy a 0700 /root, which nobody cannot cross)."""
    parents = [str(p) for p in reversed(Path(path).parents) if str(p) != "/"]
    return [arg for parent in parents for arg in ("--perms", "0755", "--dir", parent)]


def _python_roots() -> list[str]:
    """The interpreter and its packages (the venv's site-packages, not the project it belongs to)."""
    roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    roots = sorted(r for r in roots if not r.startswith("/usr/"))
    return [r for r in roots if not any(r != o and r.startswith(o + os.sep) for o in roots)]


def _read_roots() -> list[str]:
    """What the policy lets the code read besides its directory (inside the sandbox's view)."""
    return sorted({"/usr", "/etc", sys.prefix, sys.base_prefix, sys.exec_prefix, "/opt/keye"})


@lru_cache(maxsize=1)
def bwrap_path() -> str:
    """bubblewrap's path once it has been seen to work here, else SandboxUnavailable naming the package."""
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable(f"the code sandbox needs bubblewrap (bwrap), which is not installed: "
                                 f"{INSTALL_HINT}")
    tmpfs = ["--size", "65536", "--tmpfs", "/tmp"]  # --size: bubblewrap 0.7 or newer (root needs no 0.8)
    probe = [path, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--ro-bind", "/", "/",
             *tmpfs, "true"]  # --disable-userns: 0.8 or newer
    if os.geteuid() == 0:
        probe = [path, "--unshare-pid", "--unshare-net", "--die-with-parent", "--ro-bind", "/", "/", *tmpfs, "true"]
    done = subprocess.run(probe, capture_output=True, text=True)
    if "--size" in done.stderr or "Unknown option" in done.stderr:
        raise SandboxUnavailable(f"{path} is too old for the code sandbox ({done.stderr.strip()}): "
                                 f"{INSTALL_HINT}")
    if done.returncode != 0:
        raise SandboxUnavailable(f"bubblewrap cannot create namespaces here ({done.stderr.strip()}); the code "
                                 f"sandbox needs user, mount, pid and network namespaces (in a container, allow "
                                 f"them or run with --privileged)")
    return path


def _status(code: int | None, timed_out: bool, disk_full: bool, at_cpu_limit: bool) -> str:
    """The run's label from its exit `code` (negative: the signal that killed it) and the evidence beside it.
    Code that ignores SIGXCPU is SIGKILLed at the CPU limit's hard end: `at_cpu_limit` tells that kill from
    another (the kernel's OOM killer, a kill from outside)."""
    if timed_out:
        return "timeout"
    if code == 0:
        return "ok"
    if disk_full:  # the code failed with its directory full: most likely ENOSPC
        return "disk_limit"
    if code == MEMORY_EXIT:
        return "memory_limit"
    if code is not None and code < 0:
        if -code == signal.SIGKILL and at_cpu_limit:
            return "cpu_limit"
        return {signal.SIGXCPU: "cpu_limit", signal.SIGXFSZ: "file_size_limit"}.get(-code, "signal")
    return "error"


def _read(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("\n[output truncated]" if len(data) > limit else "")


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


def decode_images(files: list[tuple[str, bytes]], inputs: dict[str, bytes],
                  limits: SandboxLimits) -> tuple[list, list, list]:
    """(names, PIL images, skipped "name: why") of the image files the supervisor sent back, decoded within
    the pixel budget (sizes are checked before decoding); inputs the code did not change are left out."""
    names, found, skipped = [], [], []
    pixels = limits.image_pixels
    for rel, data in files:
        if inputs.get(rel) == data:
            continue
        image, why = _decode(data, pixels)
        if image is None:
            skipped.append(f"{rel}: {why}")
            continue
        pixels -= image.width * image.height
        names.append(rel)
        found.append(image)
    return names, found, skipped


def _decode(data: bytes, max_pixels: int):
    """A fully loaded PIL image if `data` is one within `max_pixels`, else (None, why). The size is checked
    from the header, before decoding; PIL's own `MAX_IMAGE_PIXELS` is left alone, as it belongs to the whole
    process (lowered here, it made a 42-megapixel image fail everywhere else)."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        pixels = image.width * image.height
        if pixels > max_pixels:
            return None, f"{image.width}x{image.height} is over the image pixel budget ({max_pixels} left)"
        image.load()
    # PIL's own check, at open (an error past twice MAX_IMAGE_PIXELS; a warning past it, an error too where
    # warnings are)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, f"over the image pixel budget ({max_pixels} left)"
    except Exception as error:  # noqa: BLE001 (not an image whatever its name)
        return None, f"not a readable image ({type(error).__name__})"
    return image, None

"""Attacks on the code sandbox (issue 20), run against the real bubblewrap sandbox. Most run with the
audit-hook policy off (`policy=False`): the kernel alone must hold; the policy is only defence in depth."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from rewards.sandbox import SandboxLimits, run_code

KERNEL_ONLY = SandboxLimits(policy=False, wall_s=10)


def _host_processes(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_posixsubprocess_fork_exec_cannot_start_a_process():
    code = ("import _posixsubprocess, os\n"
            "args = [[b'/bin/sh', b'-c', b'echo escaped > /tmp/x'], [b'/bin/sh'], True, (), None, None,"
            " -1, -1, -1, -1, -1, -1, *os.pipe(), False, False, -1, None, None, None, -1, None]\n"
            "try:\n"
            "    try:\n"
            "        _posixsubprocess.fork_exec(*args, True)  # 3.11: 23 arguments (allow_vfork last)\n"
            "    except TypeError:\n"
            "        _posixsubprocess.fork_exec(*args)\n"
            "    print('started')\n"
            "except OSError as error:\n"
            "    print('refused', error.errno)\n")
    for limits in (KERNEL_ONLY, SandboxLimits()):  # the audit hook raises no event for fork_exec: kernel only
        result = run_code(code, limits=limits)
        assert "refused 11" in result.stdout and "started" not in result.stdout, result.stderr  # EAGAIN


def test_multiprocessing_spawn_cannot_start_a_process():
    code = ("import multiprocessing as mp\n"
            "try:\n"
            "    p = mp.get_context('spawn').Process(target=print, args=('child ran',)); p.start(); p.join()\n"
            "    print('started', p.exitcode)\n"
            "except OSError as error:\n"
            "    print('refused', error.errno)\n")
    result = run_code(code, limits=KERNEL_ONLY)
    assert "refused" in result.stdout and "child ran" not in result.stdout, result.stderr


def test_processes_allowed_see_nothing_outside_and_write_nowhere(tmp_path):
    marker = f"/tmp/keye-escape-{os.getpid()}"
    secret = Path(__file__).resolve()  # a project file: must not be visible
    code = ("import subprocess\n"
            f"out = subprocess.run(['/bin/sh', '-c', 'cat {secret}; ls /root /work/main; echo x > {marker}; "
            f"echo x > /usr/x; id -u'], capture_output=True, text=True)\n"
            "print(out.stdout); print(out.stderr)\n")
    result = run_code(code, limits=SandboxLimits(policy=False, max_processes=8))
    assert result.status == "ok", result.stderr
    assert "def test_processes_allowed" not in result.stdout  # the project file was not readable
    assert not os.path.exists(marker) and "65534" in result.stdout


def test_setsid_children_are_dead_when_run_code_returns():
    tag = f"{os.getpid() % 1000 + 7000}.{int(time.time() * 1000) % 1000}"
    code = ("import subprocess\n"
            f"for _ in range(30):\n"
            f"    subprocess.Popen(['sleep', '{tag}'], start_new_session=True)\n"
            "print('started 30')\n")
    result = run_code(code, limits=SandboxLimits(policy=False, max_processes=40))
    assert "started 30" in result.stdout, result.stderr
    time.sleep(0.2)
    assert _host_processes(f"sleep\x00{tag}") == []  # the pid namespace took every one of them


def test_dir_fd_chdir_and_relative_symlinks_reach_nothing_outside(tmp_path):
    code = ("import os\n"
            "fd = os.open('/', os.O_RDONLY)\n"
            "attempts = {'dirfd read': lambda: os.open('etc/passwd', os.O_RDONLY, dir_fd=fd),\n"
            "            'chdir read': lambda: (os.chdir('/etc'), open('passwd').read()),\n"
            "            'symlink read': lambda: (os.chdir('/sandbox'), os.symlink('../etc/passwd', 'p'),"
            " open('p').read()),\n"
            "            'dirfd write': lambda: os.open('usr/evil', os.O_CREAT | os.O_WRONLY, dir_fd=fd),\n"
            "            'chdir write': lambda: (os.chdir('/'), open('evil', 'w')),\n"
            "            'mkfifo outside': lambda: os.mkfifo('/usr/fifo'),\n"
            "            'mknod outside': lambda: os.mknod('/dev/evil'),\n"
            "            'mknod device': lambda: (os.chdir('/sandbox'), os.mknod('disk', 0o600 | 0o060000,"
            " os.makedev(8, 0)))}\n"
            "for name, attempt in attempts.items():\n"
            "    try:\n"
            "        attempt(); print('BROKE', name)\n"
            "    except OSError as error:\n"
            "        print('held', name, error.errno)\n")
    result = run_code(code, limits=KERNEL_ONLY)
    assert "BROKE" not in result.stdout and result.stdout.count("held") == 8, result.stdout + result.stderr
    assert "root:x:0" not in result.stdout


def test_a_fifo_named_like_an_image_does_not_hang_the_parent():
    start = time.perf_counter()
    result = run_code("import os; os.mkfifo('out.png'); os.mkfifo('b.jpg')", limits=KERNEL_ONLY)
    assert time.perf_counter() - start < 5
    assert result.status == "ok" and result.images == []
    assert any("not a regular file" in why for why in result.skipped_images)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (what a decompression bomb looks like before decoding)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def test_huge_pngs_are_refused_before_decoding():
    bomb = _png_claiming(13000, 13000)
    code = (f"data = {bomb!r}\n"
            "for i in range(3):\n"
            "    open(f'bomb{i}.png', 'wb').write(data)\n"
            "Image.new('RGB', (8, 8)).save('small.png')\n")
    start = time.perf_counter()
    result = run_code(code, images=[_small()], limits=KERNEL_ONLY)
    assert time.perf_counter() - start < 5
    assert result.image_names == ["small.png"]
    assert sum("pixel budget" in why for why in result.skipped_images) == 3


def test_the_image_byte_budget_holds():
    code = "import os\nfor i in range(3):\n    open(f'big{i}.png', 'wb').write(os.urandom(6 * 2**20))\n"
    result = run_code(code, limits=SandboxLimits(policy=False, image_bytes=8 * 2**20))
    assert result.images == [] and len(result.skipped_images) == 3


def _small():
    from PIL import Image

    return Image.new("RGB", (4, 4))


def test_many_files_under_the_file_size_limit_stop_at_the_disk_bound():
    """RLIMIT_FSIZE bounds one file; the work directory is a tmpfs of `disk_mb`, so 12 files of 1 MiB (each
    within the 2 MiB file limit) stop at 4 MiB together, and nothing reaches the host's disk."""
    code = ("import os\nwritten = 0\n"
            "try:\n"
            "    for i in range(12):\n"
            "        with open(f'part{i}.bin', 'wb') as f:\n"
            "            written += f.write(os.urandom(2**20))\n"
            "finally:\n"
            "    fs = os.statvfs('.')\n"
            "    print('written', written, 'dir', sum(os.path.getsize(n) for n in os.listdir('.')),"
            " 'filesystem', fs.f_blocks * fs.f_frsize)\n")
    result = run_code(code, limits=SandboxLimits(policy=False, disk_mb=4, file_size_mb=2))
    assert result.status == "disk_limit" and "No space left on device" in result.stderr, result.stderr
    written, in_dir, filesystem = (int(n) for n in result.stdout.split()[1::2])
    assert 3 * 2**20 <= written <= 4 * 2**20 and in_dir <= 4 * 2**20, result.stdout
    assert filesystem <= 4 * 2**20 + 2**16  # the work dir is its own 4 MiB filesystem, not the host's disk


# Issue 33: a user namespace of its own would make the code root there, free to mount a tmpfs past disk_mb.
NAMESPACE_ATTACKS = (
    "import ctypes, os\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "def errno_of(result):\n"
    "    return 0 if result == 0 else ctypes.get_errno()\n"
    "print('unshare', errno_of(libc.unshare(0x10000000 | 0x20000)))  # CLONE_NEWUSER | CLONE_NEWNS\n"
    "if hasattr(os, 'unshare'):  # Python 3.12+\n"
    "    try:\n"
    "        os.unshare(os.CLONE_NEWUSER); print('os.unshare 0')\n"
    "    except OSError as error:\n"
    "        print('os.unshare', error.errno)\n"
    "pid = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)  # raw clone(CLONE_NEWUSER | SIGCHLD)\n"
    "if pid == 0:\n"
    "    os._exit(0)\n"
    "print('clone', 0 if pid > 0 else ctypes.get_errno())\n"
    "print('clone3', errno_of(libc.syscall(435, 0, 0)))\n"
    "print('setns', errno_of(libc.setns(os.open('/proc/self/ns/user', os.O_RDONLY), 0)))\n"
    "os.mkdir('big')\n"
    "print('mount', errno_of(libc.mount(b'none', b'big', b'tmpfs', 0, b'size=1g')))\n"
    "try:\n"
    "    with open('big/fill', 'wb') as f:\n"
    "        for _ in range(8):\n"
    "            f.write(os.urandom(2**20))\n"
    "except OSError as error:\n"
    "    print('fill', error.errno)\n")


def _assert_namespaces_refused(stdout: str, stderr: str) -> None:
    lines = dict(line.split() for line in stdout.splitlines() if len(line.split()) == 2)
    stdout += stderr[-2000:]
    assert lines["unshare"] == "1" and lines.get("os.unshare", "1") == "1", stdout  # EPERM
    assert lines["clone"] == "1" and lines["clone3"] == "38", stdout  # EPERM; ENOSYS: libc falls back to clone
    assert lines["setns"] == "1" and lines["mount"] == "1", stdout
    assert lines["fill"] == "28", stdout  # ENOSPC: 'big' is a directory of the 4 MiB work tmpfs, nothing more


def test_code_cannot_make_a_user_namespace_nor_mount_past_the_disk_bound():
    """The escape of issue 33: unshare(CLONE_NEWUSER | CLONE_NEWNS), then a 1 GiB tmpfs. Every way into a new
    user namespace is refused (max_processes=4, so a refused clone is the filter, not RLIMIT_NPROC)."""
    result = run_code(NAMESPACE_ATTACKS, limits=SandboxLimits(policy=False, max_processes=4, disk_mb=4,
                                                              file_size_mb=16))
    assert result.status == "ok", result.stderr
    _assert_namespaces_refused(result.stdout, result.stderr)
    assert "no-new-userns" in result.isolation


def test_threads_and_subprocesses_still_start_under_the_filter():
    """Threads (clone3 refused, libc's clone fallback allowed) and a child interpreter work as before."""
    code = ("import os, subprocess, sys, threading\n"
            "out = []\n"
            "t = threading.Thread(target=out.append, args=(5,)); t.start(); t.join()\n"
            "child = subprocess.run([sys.executable, '-c', 'print(7)'], capture_output=True, text=True)\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os._exit(3)\n"
            "print('thread', out[0], 'child', child.stdout.strip(), 'fork', os.waitstatus_to_exitcode("
            "os.waitpid(pid, 0)[1]))\n")
    result = run_code(code, limits=SandboxLimits(policy=False, max_processes=8))
    assert result.status == "ok" and result.stdout.split() == ["thread", "5", "child", "7", "fork", "3"], \
        result.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv") or not os.path.exists("/usr/bin/python3"),
                    reason="runs the sandbox as nobody: needs root, setpriv and /usr/bin/python3")
def test_started_by_a_normal_user_the_code_cannot_make_a_user_namespace():
    """The non-root path (bubblewrap makes the user namespace; --disable-userns): run_code as nobody, under the
    system interpreter (the test's own may sit in a directory nobody cannot enter), with this PIL on its path."""
    import PIL

    repo, site = Path(__file__).resolve().parents[2], Path(PIL.__file__).resolve().parents[1]
    script = (f"import sys\nsys.path[:0] = [{str(repo)!r}, {str(site)!r}]\n"
              "from rewards.sandbox import SandboxLimits, run_code\n"
              f"result = run_code({NAMESPACE_ATTACKS!r}, limits=SandboxLimits(policy=False, max_processes=4, "
              "disk_mb=4, file_size_mb=16))\n"
              "print(result.stdout, end=''); print(result.stderr, file=sys.stderr)\n")
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-I",
                           "-"], input=script, capture_output=True, text=True, cwd="/", timeout=60)
    if "No module named" in done.stderr:
        pytest.skip(f"/usr/bin/python3 cannot import this environment's packages: {done.stderr[-300:]}")
    _assert_namespaces_refused(done.stdout, done.stderr)


def test_the_sandbox_pixel_budget_leaves_pils_limit_for_the_rest_of_the_process():
    """A 42-megapixel image opens elsewhere in the process after the sandbox decoded its images under a
    16-megapixel budget (the sandbox once set PIL's process-wide limit to its budget)."""
    import io

    from PIL import Image

    from rewards.sandbox import decode_images

    before = Image.MAX_IMAGE_PIXELS
    small = io.BytesIO()
    Image.new("RGB", (8, 8)).save(small, format="PNG")
    files = [("small.png", small.getvalue()), ("big.png", _png_claiming(7000, 6000))]
    names, _, skipped = decode_images(files, {}, SandboxLimits(image_pixels=16 * 2**20))
    assert names == ["small.png"] and skipped == [f"big.png: 7000x6000 is over the image pixel budget "
                                                  f"({16 * 2**20 - 64} left)"]
    assert Image.MAX_IMAGE_PIXELS == before
    assert Image.open(io.BytesIO(_png_claiming(7000, 6000))).size == (7000, 6000)

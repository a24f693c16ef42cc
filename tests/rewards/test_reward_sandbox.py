"""The code sandbox against runaway, hostile and nosy code; images in and out for the agentic mode."""

from __future__ import annotations

import os
import socket
import time

import pytest
from PIL import Image

from rewards.sandbox import SandboxLimits, run_code, run_python


def test_prints_and_exit_status():
    result = run_code("print('hi'); import sys; print('err', file=sys.stderr); sys.exit(0)")
    assert (result.status, result.exit_code, result.stdout, result.stderr) == ("ok", 0, "hi\n", "err\n")
    failed = run_code("raise ValueError('bad input')")
    assert failed.status == "error" and failed.exit_code == 1 and "ValueError: bad input" in failed.stderr
    # the traceback starts at the user's code: no frame of the sandbox itself (or its host path) in it
    assert failed.stderr.splitlines()[:2] == ["Traceback (most recent call last):",
                                              '  File "<sandbox>", line 1, in <module>']


def test_infinite_loop_hits_the_cpu_limit():
    start = time.perf_counter()
    result = run_code("while True: pass", limits=SandboxLimits(cpu_s=1, wall_s=10))
    assert result.status == "cpu_limit" and time.perf_counter() - start < 5


def test_sleeping_code_hits_the_wall_limit():
    result = run_code("import time; time.sleep(60)", limits=SandboxLimits(wall_s=1))
    assert result.status == "timeout" and 1.0 <= result.wall_s < 3


def test_fork_bomb_is_stopped_at_the_first_fork_by_default():
    result = run_code("import os\nwhile True:\n    os.fork()", limits=SandboxLimits(wall_s=5))
    assert result.status == "error" and "os.fork is not allowed" in result.stderr
    assert result.wall_s < 3


def test_fork_bomb_is_capped_by_the_kernel_when_forks_are_allowed():
    code = ("import os, time\nforks = 0\nwhile True:\n    try:\n        os.fork(); forks += 1\n"
            "    except OSError:\n        print('refused', flush=True); time.sleep(30)")
    result = run_code(code, limits=SandboxLimits(wall_s=2, max_processes=8))
    assert result.status == "timeout"
    assert "refused" in result.stdout  # the kernel said no: the bomb did not grow past the cap
    assert {"pidns", "rlimits"} <= set(result.isolation)
    time.sleep(0.2)
    assert not _sandbox_processes(), "every process the code forked was killed"


def _sandbox_processes() -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"sandbox_child.py" in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_memory_hog_hits_the_memory_limit():
    code = "hog = []\nwhile True:\n    hog.append(bytearray(32 * 2**20))"
    result = run_code(code, limits=SandboxLimits(memory_mb=256))
    assert result.status == "memory_limit" and "MemoryError" in result.stderr


def test_large_file_hits_the_file_size_limit(tmp_path):
    result = run_code("open('big.bin', 'wb').write(b'x' * (8 * 2**20))", limits=SandboxLimits(file_size_mb=1))
    assert result.status != "ok" and "File too large" in result.stderr


def test_write_outside_its_directory_is_refused(tmp_path):
    target, shared_tmp = tmp_path / "escaped.txt", f"/tmp/keye-escape-{os.getpid()}.txt"
    result = run_code(f"open({str(target)!r}, 'w').write('x')\n")
    assert result.status == "error" and "sandbox policy: writing" in result.stderr
    result = run_code(f"open({shared_tmp!r}, 'w').write('x')\n")
    assert result.status == "error"
    relative = run_code("open('../escaped.txt', 'w').write('x')")
    assert relative.status == "error"
    assert not target.exists() and not os.path.exists(shared_tmp)
    assert run_code("open('inside.txt', 'w').write('x'); print(open('inside.txt').read())").stdout == "x\n"


def test_secret_in_the_callers_directory_cannot_be_read(tmp_path, monkeypatch):
    (tmp_path / "secret.txt").write_text("TOPSECRET")
    monkeypatch.chdir(tmp_path)
    attempts = [
        "print(open('secret.txt').read())",                                     # relative: fresh cwd
        f"print(open({str(tmp_path / 'secret.txt')!r}).read())",               # absolute
        f"import os; print(os.listdir({str(tmp_path)!r}))",                     # listing
        f"import subprocess; print(subprocess.run(['cat', {str(tmp_path / 'secret.txt')!r}], capture_output=True))",
        "import ctypes; ctypes.CDLL('libc.so.6').system(b'cat secret.txt')",    # undo the policy via libc
    ]
    for code in attempts:
        result = run_code(code)
        assert result.status == "error", code
        assert "TOPSECRET" not in result.stdout + result.stderr and "secret.txt'" not in result.stdout
    env = run_code("import os; print(sorted(os.environ)); print(os.getcwd())").stdout
    assert "KEYE_SANDBOX" not in env and str(tmp_path) not in env


def _listening_socket():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    return server


def _assert_no_connection(server):
    with pytest.raises(socket.timeout):
        server.accept()


def test_network_socket_is_refused():
    server = _listening_socket()
    port = server.getsockname()[1]
    result = run_code(f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('in')")
    assert result.status == "error" and "in" not in result.stdout
    assert "socket" in result.stderr and "not allowed" in result.stderr
    assert run_code("import socket; socket.socket()").status == "error"
    _assert_no_connection(server)
    server.close()


def test_network_namespace_alone_blocks_the_network():
    server = _listening_socket()
    port = server.getsockname()[1]
    code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('in')"
    result = run_code(code, limits=SandboxLimits(policy=False, max_processes=4))
    assert "netns" in result.isolation and "policy" not in result.isolation
    # the namespace's own loopback has nothing listening: the host's server is not reachable from there
    assert result.status == "error" and "connection refused" in result.stderr.lower()
    _assert_no_connection(server)
    server.close()


def test_images_go_in_preloaded_and_written_images_come_back():
    red = Image.new("RGB", (64, 32), (255, 0, 0))
    code = ("print(image.size, len(images))\n"                      # `image` is the newest input
            "images[0].crop((0, 0, 16, 8)).save('crop.png')\n"
            "image.rotate(90, expand=True).save('rotated.jpg')\n"
            "open('notes.txt', 'w').write('not an image')\n")
    result = run_code(code, images=[red, Image.new("L", (10, 20))])
    assert result.status == "ok" and result.stdout == "(10, 20) 2\n"
    assert result.image_names == ["crop.png", "rotated.jpg"]
    assert [i.size for i in result.images] == [(16, 8), (20, 10)]
    assert result.images[0].convert("RGB").getpixel((0, 0)) == (255, 0, 0)


def test_run_python_takes_limits_as_keywords():
    result = run_python("import time; time.sleep(5)", wall_s=0.5)
    assert result.status == "timeout" and result.exit_code is not None


def test_a_symlink_to_a_secret_is_not_returned_as_an_image(tmp_path):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(secret)
    code = f"import os; os.symlink({str(secret)!r}, 'leak.png')"
    assert run_code(code).status == "error"  # the policy refuses the link itself
    # without the policy the link is made (to a path that does not exist in the sandbox's view), and the
    # collector must not follow it
    result = run_code(code, limits=SandboxLimits(policy=False, max_processes=4))
    assert result.status == "ok" and result.images == []


def test_without_bubblewrap_the_error_says_what_to_install(monkeypatch):
    import rewards.sandbox as sandbox

    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    sandbox.bwrap_path.cache_clear()
    try:
        with pytest.raises(sandbox.SandboxUnavailable, match=r"apt-get install -y bubblewrap") as error:
            run_code("print(1)")
        assert "no weaker fallback" in str(error.value) and "0.8 or newer" in str(error.value)
    finally:
        sandbox.bwrap_path.cache_clear()


def test_code_that_ignores_sigxcpu_is_killed_at_the_hard_limit_and_labelled_cpu_limit():
    code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True: pass"
    result = run_code(code, limits=SandboxLimits(cpu_s=1, wall_s=10))
    assert (result.status, result.exit_code) == ("cpu_limit", -9)  # SIGKILL one CPU second past SIGXCPU


def test_a_kill_that_is_not_the_cpu_limit_stays_labelled_signal():
    result = run_code("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", limits=SandboxLimits(policy=False))
    assert (result.status, result.exit_code) == ("signal", -9)


def test_an_mmap_past_the_memory_limit_is_labelled_memory_limit():
    result = run_code("import mmap\nmapped = mmap.mmap(-1, 2**31)", limits=SandboxLimits(memory_mb=256))
    assert result.status == "memory_limit" and "OSError: [Errno 12] Cannot allocate memory" in result.stderr
    other = run_code("raise OSError(2, 'no such thing')")  # another OSError stays an error
    assert (other.status, other.exit_code) == ("error", 1)

"""The first code that runs inside a sandbox process: it confines the process, then runs the untrusted code.

Run as ``python -I -B -u sandbox_child.py`` by `rewards.sandbox`, with its settings in the ``KEYE_SANDBOX``
environment variable and the code on stdin. In order: join the pids cgroup (if given), enter a fresh
network namespace (if given), set the resource limits, load the input images, install the audit-hook
policy, run the code. Confinement happens here rather than in a ``preexec_fn`` because ``preexec_fn`` is
unsafe in threaded parents (Ray actors are threaded); no untrusted code runs before it is done.

The audit-hook policy blocks, from inside the interpreter: file access outside the working directory (reads
of the Python installation excepted), sockets, subprocesses and exec, signals to other processes, ctypes
(which could undo the rest), and forks when one process is all that is allowed. It is a tripwire for
honest mistakes and naive escapes, not a kernel boundary; the kernel boundaries are the rlimits, the pids
cgroup and the network namespace. This module imports only the standard library (and PIL for images).
"""

import builtins
import ctypes
import json
import os
import resource
import sys
import traceback

MEMORY_EXIT = 3  # exit status for MemoryError, so the parent can say "memory limit" rather than "error"
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {"os.listdir": 0, "os.scandir": 0, "os.remove": 0, "os.rmdir": 0, "os.mkdir": 0, "os.chmod": 0,
                "os.chown": 0, "os.truncate": 0, "os.utime": 0, "shutil.rmtree": 0, "os.rename": (0, 1),
                "os.replace": (0, 1), "os.link": (0, 1), "os.symlink": (0, 1), "shutil.copyfile": (0, 1)}
_BLOCKED = {"socket.__new__", "socket.bind", "socket.connect", "socket.getaddrinfo", "socket.sendto",
            "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "pty.spawn", "os.forkpty",
            "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
            "ctypes.call_function"}


def join_cgroup(path):
    if path:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))


def enter_netns(flags):
    if flags:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(flags) != 0:
            raise OSError(ctypes.get_errno(), "unshare(network namespace) failed in the sandbox")


def set_limits(limits):
    def cap(kind, value, hard=None):
        resource.setrlimit(kind, (value, value if hard is None else hard))

    cap(resource.RLIMIT_CPU, limits["cpu_s"], limits["cpu_s"] + 1)  # SIGXCPU, then SIGKILL a second later
    cap(resource.RLIMIT_AS, limits["memory_bytes"])
    cap(resource.RLIMIT_FSIZE, limits["file_size_bytes"])
    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_NOFILE, 256)
    if limits.get("nproc"):
        cap(resource.RLIMIT_NPROC, limits["nproc"])


def load_images(names):
    namespace = {"__name__": "__main__", "__builtins__": builtins, "images": [], "image": None}
    if names:
        from PIL import Image

        images = []
        for name in names:
            with Image.open(name) as im:
                images.append(im.copy())  # fully read: the code may overwrite or delete the file
        namespace.update(Image=Image, images=images, image=images[-1])  # the newest: what a tool step just made
    return namespace


def _inside(path, roots):
    return any(path == root or path.startswith(root + os.sep) for root in roots)


def install_policy(work, read_roots, allow_fork):
    work = os.path.realpath(work)
    writable = (work, "/dev/null")
    readable = tuple(os.path.realpath(r) for r in read_roots) + writable + ("/dev/urandom",)
    blocked = set(_BLOCKED) | (set() if allow_fork else {"os.fork"})

    def check(path, write):
        if isinstance(path, int) or path is None:
            return  # an already-open descriptor or a dir_fd call: nothing new is reached
        real = os.path.realpath(os.fsdecode(path))
        if not _inside(real, writable if write else readable):
            raise PermissionError(f"sandbox policy: {'writing' if write else 'reading'} {real} is not allowed "
                                  f"(only the working directory {work})")

    def hook(event, args):
        if event in blocked:
            raise PermissionError(f"sandbox policy: {event} is not allowed in the sandbox")
        if event == "open":
            path, mode, flags = args
            write = bool((flags or 0) & _WRITE_FLAGS) or any(c in (mode if isinstance(mode, str) else "")
                                                              for c in "wax+")
            check(path, write)
        elif event in _PATH_EVENTS:
            positions = _PATH_EVENTS[event]
            for i in (positions if isinstance(positions, tuple) else (positions,)):
                check(args[i], event not in ("os.listdir", "os.scandir"))

    sys.addaudithook(hook)


def run(code, namespace):
    try:
        exec(compile(code, "<sandbox>", "exec"), namespace)
    except MemoryError as error:
        print_user_traceback(error)
        sys.stderr.flush()
        os._exit(MEMORY_EXIT)
    except SystemExit:
        raise
    except BaseException as error:  # noqa: BLE001
        print_user_traceback(error)
        sys.exit(1)


def print_user_traceback(error):
    """From the user's code down: the model reading this output should not see the sandbox's own frame."""
    traceback.print_exception(type(error), error, error.__traceback__.tb_next)


def main():
    config = json.loads(os.environ.pop("KEYE_SANDBOX"))
    code = sys.stdin.read()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    join_cgroup(config["cgroup"])
    enter_netns(config["unshare_flags"])
    set_limits(config["limits"])
    namespace = load_images(config["inputs"])
    if config["policy"]:
        install_policy(os.getcwd(), config["read_roots"], config["limits"]["max_processes"] > 1)
    run(code, namespace)


if __name__ == "__main__":
    main()

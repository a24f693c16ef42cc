"""The first code that runs inside a sandbox: it drops to an unprivileged user, then runs the untrusted code.

Run by `rewards.sandbox` as ``bwrap ... python -I -B -u /opt/keye/sandbox_child.py`` with its settings in the
``KEYE_SANDBOX`` environment variable and the code on stdin. bubblewrap has already put it in fresh mount,
pid, network, IPC and UTS namespaces with a read-only view of the system and only ``/sandbox`` writable.
When the sandbox is started by root, this process is still root there, so it splits in two:

- a supervisor (root, outside any user namespace) that writes the user namespace's id maps, waits for the
  code and writes its exit status to the status pipe (a channel the code has no handle on);
- the code's process, which enters a new user namespace where only uid/gid 65534 exist (mapped to 65534
  outside: nobody, not root), becomes that user with no capabilities and ``no_new_privs``, sets its rlimits
  (CPU, address space, file size, open files, processes), loads the input images, installs the audit-hook
  policy (defence in depth only: the kernel is the boundary) and runs the code.
Started by a normal user, bubblewrap made the user namespace itself and there is nothing to drop. This module
imports only the standard library (and PIL for images): the project is not visible inside the sandbox.
"""

import builtins
import ctypes
import json
import os
import resource
import sys
import traceback

MEMORY_EXIT = 3  # exit status for MemoryError, so the parent can say "memory limit" rather than "error"
CLONE_NEWUSER, PR_SET_NO_NEW_PRIVS = 0x10000000, 38
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {"os.listdir": 0, "os.scandir": 0, "os.remove": 0, "os.rmdir": 0, "os.mkdir": 0, "os.chmod": 0,
                "os.chown": 0, "os.truncate": 0, "os.utime": 0, "shutil.rmtree": 0, "os.rename": (0, 1),
                "os.replace": (0, 1), "os.link": (0, 1), "os.symlink": (0, 1), "shutil.copyfile": (0, 1)}
_BLOCKED = {"socket.__new__", "socket.bind", "socket.connect", "socket.getaddrinfo", "socket.sendto",
            "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "pty.spawn", "os.forkpty",
            "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
            "ctypes.call_function"}


# ------------------------------------------------------------------------------------------ privileges
def drop_to_user(uid, status_fd: int) -> None:
    """Fork; the child returns as `uid` in its own user namespace (uid None: as it is, bwrap made the
    namespace), the parent supervises, reports the child's exit on `status_fd` and never returns."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(status_fd)
        os.close(ready_r)
        os.close(go_w)
        libc = ctypes.CDLL(None, use_errno=True)
        if uid is not None and libc.unshare(CLONE_NEWUSER) != 0:
            raise OSError(ctypes.get_errno(), "sandbox: unshare(CLONE_NEWUSER) failed")
        os.write(ready_w, b"1")
        if os.read(go_r, 1) != b"1":
            os._exit(125)  # the supervisor could not write the id maps
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        drop_capabilities(libc)
        return
    os.close(ready_w)
    os.close(go_r)
    os.read(ready_r, 1)
    ok = b"1"
    try:
        for name in ("uid_map", "gid_map") if uid is not None else ():
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(f"{uid} {uid} 1\n")  # only the unprivileged user exists in there, as itself outside
    except OSError as error:
        print(f"sandbox: cannot map the user namespace: {error}", file=sys.stderr)
        ok = b"0"
    os.write(go_w, ok)
    _, status = os.waitpid(pid, 0)
    report_status(status_fd, status)
    os._exit(0)


def drop_capabilities(libc) -> None:
    """Empty every capability set and forbid gaining any (setuid to an id that is not the namespace's root
    keeps the capabilities the creator of a user namespace gets in it)."""
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable (x2 words): all zero
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "sandbox: capset failed")
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "sandbox: prctl(PR_SET_NO_NEW_PRIVS) failed")


def report_status(status_fd: int, status: int) -> None:
    """Write the code's exit: ``{"exit": n}`` or ``{"signal": n}`` (SIGXCPU: cpu limit)."""
    record = {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {"exit": os.waitstatus_to_exitcode(status)}
    os.write(status_fd, json.dumps(record).encode())
    os.close(status_fd)


def set_limits(limits):
    def cap(kind, value, hard=None):
        resource.setrlimit(kind, (value, value if hard is None else hard))

    cap(resource.RLIMIT_CPU, limits["cpu_s"], limits["cpu_s"] + 1)  # SIGXCPU, then SIGKILL a second later
    cap(resource.RLIMIT_AS, limits["memory_bytes"])
    cap(resource.RLIMIT_FSIZE, limits["file_size_bytes"])
    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_NOFILE, limits["open_files"])
    # counted per user namespace (Linux >= 5.14): this process is the first of its user in there
    cap(resource.RLIMIT_NPROC, limits["max_processes"])


# ------------------------------------------------------------------------------------------ the code
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
    """The audit-hook tripwire: clear messages for honest mistakes. Not a boundary (see the module docstring)."""
    work = os.path.realpath(work)
    writable = (work, "/dev/null")
    readable = tuple(os.path.realpath(r) for r in read_roots) + writable + ("/dev/urandom",)
    blocked = set(_BLOCKED) | (set() if allow_fork else {"os.fork"})

    def check(path, write):
        if isinstance(path, int) or path is None:
            return  # an already-open descriptor or a dir_fd call: the kernel's view decides
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
    drop_to_user(config["drop_to_uid"], config["status_fd"])
    set_limits(config["limits"])
    namespace = load_images(config["inputs"])
    if config["policy"]:
        install_policy(os.getcwd(), config["read_roots"], config["limits"]["max_processes"] > 1)
    run(code, namespace)


if __name__ == "__main__":
    main()

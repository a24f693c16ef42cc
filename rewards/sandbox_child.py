"""The first code that runs inside a sandbox: it drops to an unprivileged user, then runs the untrusted code.

Run by `rewards.sandbox` as ``bwrap ... python -I -B -u /opt/keye/sandbox_child.py`` with its settings in the
``KEYE_SANDBOX`` environment variable and the code on stdin. bubblewrap has already put it in fresh mount,
pid, network, IPC and UTS namespaces with a read-only view of the system and only ``/sandbox`` writable
(a tmpfs of bounded size, so nothing the code writes reaches the host's disk). It splits in two:

- a supervisor that copies the input images into ``/sandbox``, writes the user namespace's id maps (started
  by root, it is root outside any user namespace), waits for the code, kills whatever the code left running,
  and sends the exit status and the image files the code wrote (regular files only, within the byte budget)
  over the status pipe, a channel the code has no handle on; it is not dumpable, so the code cannot ptrace it;
- the code's process, which enters a new user namespace where only uid/gid 65534 exist (mapped to 65534
  outside: nobody, not root), becomes that user with no capabilities and ``no_new_privs``, installs a seccomp
  filter so that it can make no user namespace (nor mount anything) of its own, sets its rlimits
  (CPU, address space, file size, open files, processes), loads the input images, installs the audit-hook
  policy (defence in depth only: the kernel is the boundary) and runs the code.
Started by a normal user, bubblewrap made the user namespace itself and there is nothing to drop (the code
can then signal the supervisor, which loses only its own report). This module
imports only the standard library (and PIL for images): the project is not visible inside the sandbox.
"""

import builtins
import ctypes
import errno
import json
import os
import platform
import resource
import shutil
import signal
import stat
import struct
import sys
import time
import traceback

MEMORY_EXIT = 3  # exit status for MemoryError or ENOMEM, so the parent can say "memory limit" rather than "error"
CLONE_NEWUSER, PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE = 0x10000000, 38, 4
# seccomp (linux/seccomp.h, linux/filter.h, linux/audit.h); syscall numbers are x86_64's
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
SECCOMP_RET_KILL_PROCESS, SECCOMP_RET_ERRNO, SECCOMP_RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
SECCOMP_DATA_NR, SECCOMP_DATA_ARCH, SECCOMP_DATA_ARG0 = 0, 4, 16  # offsets; ARG0: args[0]'s low 32 bits
AUDIT_ARCH_X86_64, X32_SYSCALL_BIT = 0xC000003E, 0x40000000
BPF_LD_ABS, BPF_JEQ, BPF_JGE, BPF_JSET, BPF_RET = 0x20, 0x15, 0x35, 0x45, 0x06  # (word, absolute; jump K; ret K)
NR_CLONE, NR_UNSHARE, NR_CLONE3 = 56, 272, 435
# mount, umount2, pivot_root, setns, open_tree, move_mount, fsopen, fsconfig, fsmount, fspick, mount_setattr
DENIED_SYSCALLS = (165, 166, 155, 308, 428, 429, 430, 431, 432, 433, 442)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {"os.listdir": 0, "os.scandir": 0, "os.remove": 0, "os.rmdir": 0, "os.mkdir": 0, "os.chmod": 0,
                "os.chown": 0, "os.truncate": 0, "os.utime": 0, "shutil.rmtree": 0, "os.rename": (0, 1),
                "os.replace": (0, 1), "os.link": (0, 1), "os.symlink": (0, 1), "shutil.copyfile": (0, 1)}
_BLOCKED = {"socket.__new__", "socket.bind", "socket.connect", "socket.getaddrinfo", "socket.sendto",
            "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "pty.spawn", "os.forkpty",
            "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
            "ctypes.call_function"}


# ------------------------------------------------------------------------------------------ privileges
class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def drop_to_user(uid, status_fd: int, collect: dict) -> None:
    """Fork; the child returns as `uid` in its own user namespace (uid None: as it is, bwrap made the
    namespace), the parent supervises, reports the child's exit and images on `status_fd` and never returns."""
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
        forbid_namespaces(libc)
        return
    os.close(ready_w)
    os.close(go_r)
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no ptrace of the supervisor by the code
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
    _, status, usage = os.wait4(pid, 0)
    end_the_rest()
    report(status_fd, status, usage.ru_utime + usage.ru_stime, os.getcwd(), collect)
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


def seccomp_program() -> bytes:
    """The classic-BPF filter `forbid_namespaces` installs (x86_64 numbering), as packed ``sock_filter``s.

    A foreign syscall ABI (i386's ``int 0x80``, x32's numbers) would see other numbers: it kills the process.
    ``unshare`` and ``clone`` fail with EPERM when their flags ask for a new user namespace; ``clone3`` passes
    its flags in memory the filter cannot read, so it fails with ENOSYS and libc falls back to ``clone``, whose
    flags are checked. ``setns`` and the mount calls fail with EPERM: the code has no business with them."""
    deny = {nr: SECCOMP_RET_ERRNO | errno.EPERM for nr in DENIED_SYSCALLS}
    deny[NR_CLONE3] = SECCOMP_RET_ERRNO | errno.ENOSYS
    program = [(BPF_LD_ABS, 0, 0, SECCOMP_DATA_ARCH), (BPF_JEQ, 1, 0, AUDIT_ARCH_X86_64),
               (BPF_RET, 0, 0, SECCOMP_RET_KILL_PROCESS),
               (BPF_LD_ABS, 0, 0, SECCOMP_DATA_NR), (BPF_JGE, 0, 1, X32_SYSCALL_BIT),
               (BPF_RET, 0, 0, SECCOMP_RET_KILL_PROCESS)]
    for nr, action in deny.items():
        program += [(BPF_JEQ, 0, 1, nr), (BPF_RET, 0, 0, action)]
    program += [(BPF_JEQ, 1, 0, NR_UNSHARE), (BPF_JEQ, 0, 3, NR_CLONE),  # else: to the final ALLOW
                (BPF_LD_ABS, 0, 0, SECCOMP_DATA_ARG0), (BPF_JSET, 0, 1, CLONE_NEWUSER),
                (BPF_RET, 0, 0, SECCOMP_RET_ERRNO | errno.EPERM), (BPF_RET, 0, 0, SECCOMP_RET_ALLOW)]
    return b"".join(struct.pack("=HBBI", code, jt, jf, k) for code, jt, jf, k in program)


def forbid_namespaces(libc) -> None:
    """Install `seccomp_program` on this (single-threaded, just forked) process: without it the code could make
    its own user namespace, be root there and mount a tmpfs past ``disk_mb`` and the memory limit. Needs
    ``no_new_privs`` (set by `drop_capabilities`); inherited by every thread and process the code starts.
    Only x86_64 numbers are known: on another machine the code is not run at all rather than run unfiltered."""
    if platform.machine() != "x86_64":
        raise OSError(errno.ENOSYS, f"sandbox: the seccomp filter knows x86_64 only, not {platform.machine()}; "
                                    f"refusing to run the code without it")
    code = seccomp_program()
    filters = ctypes.create_string_buffer(code, len(code))
    program = SockFprog(len(code) // 8, ctypes.cast(filters, ctypes.c_void_p))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "sandbox: prctl(PR_SET_SECCOMP) failed")


def end_the_rest(wait_s: float = 2.0) -> None:
    """SIGKILL every other process of the pid namespace (its init excepted) and wait until none is left, so no
    descendant of the code can change a file while the images are read."""
    deadline = time.monotonic() + wait_s
    try:
        os.kill(-1, signal.SIGKILL)
        while time.monotonic() < deadline:
            os.kill(-1, 0)  # ESRCH once only the supervisor and init are left (init reaps the killed)
            time.sleep(0.01)
    except ProcessLookupError:
        pass


def report(status_fd: int, status: int, cpu_s: float, work: str, collect: dict) -> None:
    """Write one JSON line, the code's exit (``exit`` or ``signal``: SIGXCPU is the cpu limit), the CPU seconds
    it used (``cpu_s``: a SIGKILL at the limit's hard end is the cpu limit too), whether the work directory is
    full (``disk_full``), the image files read back (``files``: [name, size]) and the ones skipped
    (``skipped``: "name: why"), then the files' bytes in that order."""
    record = {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {"exit": os.waitstatus_to_exitcode(status)}
    record["cpu_s"] = round(cpu_s, 3)
    disk = os.statvfs(work)
    record["disk_full"] = disk.f_bavail * disk.f_frsize < 64 * 1024
    files, skipped = read_images(work, collect["image_bytes"], collect["max_images"], collect["entries"])
    record.update(files=[[name, len(data)] for name, data in files], skipped=skipped)
    with os.fdopen(status_fd, "wb") as out:
        out.write(json.dumps(record).encode() + b"\n")
        for _, data in files:
            out.write(data)


def read_images(work: str, max_bytes: int, max_images: int, entries: int) -> tuple[list, list]:
    """([(relative name, bytes)], ["name: why"]) for the files with an image suffix: only regular files (opened
    with O_NOFOLLOW | O_NONBLOCK, kept only if fstat says S_ISREG, so a FIFO or a symlink is never followed or
    waited on), within `max_bytes` together and `max_images`; at most `entries` directory entries are looked
    at, so a million empty files cost nothing."""
    found, skipped, seen = [], [], 0
    for dirpath, dirs, names in os.walk(work, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            seen += 1
            if seen > entries:
                return found, skipped
            if not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), work)
            if len(found) >= max_images:
                skipped.append(f"{rel}: more than max_images={max_images}")
                continue
            data, why = read_regular(os.path.join(dirpath, name), max_bytes)
            if data is None:
                skipped.append(f"{rel}: {why}")
                continue
            max_bytes -= len(data)
            found.append((rel, data))
    return found, skipped


def read_regular(path: str, max_bytes: int):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        return None, f"cannot open ({error.strerror})"  # a symlink gives ELOOP: never followed
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, "not a regular file"
        if info.st_size > max_bytes:
            return None, f"{info.st_size} bytes is over the image byte budget ({max_bytes} left)"
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        return None, "over the image byte budget"
    return data, None


def copy_inputs(source: str, names, uid) -> None:
    """The input images into the work directory (a fresh tmpfs), owned by the code's user."""
    for name in names:
        shutil.copyfile(os.path.join(source, name), name)
    if uid is not None:
        for path in [".", *names]:
            os.chown(path, uid, uid)
    os.chmod(".", 0o700)


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
    except SystemExit:
        raise
    except BaseException as error:  # noqa: BLE001
        print_user_traceback(error)
        # an mmap or a C library over the address-space limit fails with ENOMEM, not MemoryError
        if isinstance(error, MemoryError) or (isinstance(error, OSError) and error.errno == errno.ENOMEM):
            sys.stderr.flush()
            os._exit(MEMORY_EXIT)
        sys.exit(1)


def print_user_traceback(error):
    """From the user's code down: the model reading this output should not see the sandbox's own frame."""
    traceback.print_exception(type(error), error, error.__traceback__.tb_next)


def main():
    config = json.loads(os.environ.pop("KEYE_SANDBOX"))
    code = sys.stdin.read()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    copy_inputs(config["inputs_dir"], config["inputs"], config["drop_to_uid"])
    drop_to_user(config["drop_to_uid"], config["status_fd"], config["collect"])
    set_limits(config["limits"])
    namespace = load_images(config["inputs"])
    if config["policy"]:
        install_policy(os.getcwd(), config["read_roots"], config["limits"]["max_processes"] > 1)
    run(code, namespace)


if __name__ == "__main__":
    main()

"""A reward function in a child process that can be killed: the only deadline that holds whatever it does.

A watchdog thread cannot stop a reward that holds the interpreter lock (sympy raising ``9^(9^(9^(9^9)))`` is
one long C call), and ``signal.alarm`` cannot interrupt a C call either. A process can always be killed, so
the reward runs in a child (``python -m rewards.reward_process FD``) that `RewardProcess` talks to over a
socket: one call at a time, one reply per call. While a call runs the parent polls, every 20 ms, for:

- the deadline             -> the child's process group is SIGKILLed, the call is marked ``timeout``;
- the child's RSS          -> over ``memory_mb``: killed, marked ``memory`` (a reward that leaks);
- what the child printed   -> over ``output_mb``: killed, marked ``output`` (a reward that prints gigabytes);
- the child dying          -> marked ``crash`` (os._exit, a segfault, the kernel's OOM killer);
- a reply that is not one  -> killed, marked ``channel`` (the reward wrote into its own socket; replies echo
                              a random request id: `rewards.channel`); stray bytes that arrive between calls
                              replace the child before the next one, so no later sample gets a forged reply.

A killed child is replaced by a fresh one before the next call, so the samples after a bad one are scored
normally. The child is a subreaper: whatever the reward starts, ``setsid`` and double-forked processes
included, stays below it and is killed with it (`end_descendants`). Values are checked in the child
(`rewards.result.normalize`), so only `RewardResult`s cross back and an unpicklable or absurd return value
(``10**400``) is that sample's ``invalid``. What the reward prints goes to
a file, not to the parent's stdout (which `posttrain reward check` uses for its JSON lines); the parent copies
the first 64 KiB of each call's output to its own stderr, control characters written out (`printable`), so a
reward's escape codes cannot clear or retitle the terminal. This module knows nothing about Ray or the pool.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass

from rewards import channel
from rewards.adapters import user_line
from rewards.result import InvalidReward, RewardResult, normalize

POLL_S = 0.02
SHOWN_OUTPUT_BYTES = 64 * 1024  # of each call's prints, copied to the parent's stderr
# C0/C1 controls but tab and newline; then the bidi marks, embeddings, overrides and isolates
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@dataclass
class ProcessLimits:
    deadline_s: float = 30.0  # per call (the worker gives a batched call deadline x samples)
    memory_mb: int = 4096  # resident memory of the child
    output_mb: int = 16  # bytes printed per call
    startup_s: float = 120.0  # importing the reward (a reward model loads its weights here)

    def __post_init__(self):
        for name in ("deadline_s", "memory_mb", "output_mb", "startup_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"reward limit {name} must be a finite number > 0, got {value!r}")


class RewardLoadError(ValueError):
    """The child could not load the reward (bad spec, import error, factory failure)."""


def describe(error: BaseException, fn=None) -> str:
    """`Type: message (at file:line)` for error records (message cut at 2000 chars): the line in `fn`'s own file
    (`adapters.user_line`, given the reward's function), else the innermost frame's file name and line."""
    frames = traceback.extract_tb(error.__traceback__)
    line = user_line(error, fn) if fn is not None else None
    where = f" (at {line})" if line else \
        f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    text = str(error)
    text = text if len(text) <= 2000 else text[:2000] + "...[truncated]"
    return f"{type(error).__name__}: {text}{where}"


# ------------------------------------------------------------------------------------------------ parent
class RewardProcess:
    """The parent's handle on one reward child. `call(samples, timeout)` always returns one result per sample."""

    def __init__(self, spec, options: dict | None = None, limits: ProcessLimits | None = None,
                 threads: int | None = None):
        self.spec, self.options, self.threads = spec, options or {}, threads
        self.limits = limits or ProcessLimits()
        self.replaced = 0  # children killed and replaced so far
        self._proc = self._sock = self._out = None
        self.batched, self.label = self._start()

    def call(self, samples: list, timeout: float) -> list[RewardResult]:
        if self._proc is None:
            self._start()
        elif channel.readable(self._sock):  # bytes since the last reply (a reward's thread) or a dead child
            self._restart()
        start = time.perf_counter()
        request_id = channel.new_id()
        try:
            channel.send(self._sock, request_id, ("call", samples))
        except (BrokenPipeError, ConnectionError, EOFError):
            return self._fail(samples, "crash", "reward process died before the call", start)
        except (pickle.PicklingError, TypeError, AttributeError) as error:  # pickled before any byte is sent
            return [RewardResult.failed("exception", f"sample cannot be sent to the reward process: "
                                                     f"{describe(error)}") for _ in samples]
        failure = self._wait(timeout, start)
        if failure is None:
            failure, reply = self._reply(request_id, len(samples), start + timeout)
        self._show_output()
        if failure is not None:
            return self._fail(samples, *failure, start)
        rss = self._rss_mb()
        if rss > self.limits.memory_mb:  # it finished, but this call took the child over the limit
            return self._fail(samples, "memory", self._memory_message(rss), start)
        return reply

    def _reply(self, request_id: bytes, count: int, end: float) -> tuple[tuple[str, str] | None, list]:
        """(None, results) for the reply to `request_id`, or ((kind, message), []) when the child died or the
        bytes were not that reply (the reward wrote into its channel: see `rewards.channel`)."""
        try:
            reply = channel.receive_reply(self._sock, request_id, max(end, time.monotonic() + 1.0))
            if not (isinstance(reply, list) and len(reply) == count
                    and all(isinstance(r, RewardResult) for r in reply)):
                raise channel.ChannelError("a reply that is not one RewardResult per sample")
        except (EOFError, ConnectionError):  # select() also wakes for a closed socket: the child died
            self._proc.wait()
            return ("crash", f"reward process died while scoring ({_exit_text(self._proc.returncode)})"), []
        except channel.ChannelError as error:
            return ("channel", f"reward {self.label!r} wrote into its reply channel: the parent read {error}; "
                               f"its process was killed and replaced"), []
        return None, reply

    def _wait(self, timeout: float, start: float) -> tuple[str, str] | None:
        """Poll until the reply is in; (kind, message) when the child had to be killed or died."""
        end = start + timeout
        while not channel.readable(self._sock, POLL_S):
            if self._proc.poll() is not None:
                return "crash", f"reward process died while scoring ({_exit_text(self._proc.returncode)})"
            if time.perf_counter() >= end:
                return "timeout", f"reward {self.label!r} gave no result within {timeout:g}s; its process " \
                                  f"was killed and replaced"
            rss = self._rss_mb()
            if rss > self.limits.memory_mb:
                return "memory", self._memory_message(rss)
            if os.fstat(self._out.fileno()).st_size > self.limits.output_mb * 2**20:
                return "output", f"reward printed more than output_mb={self.limits.output_mb} MB in one call; " \
                                 f"its process was killed and replaced"
        return None

    def _memory_message(self, rss: float) -> str:
        return f"reward process used {rss:.0f} MB (limit memory_mb={self.limits.memory_mb}); it was killed and " \
               f"replaced"

    def _fail(self, samples: list, kind: str, message: str, start: float) -> list[RewardResult]:
        self._restart()
        seconds = time.perf_counter() - start
        return [RewardResult.failed(kind, message, seconds) for _ in samples]

    def _start(self) -> tuple[bool, str]:
        self._sock, child_sock = socket.socketpair()
        self._out = tempfile.TemporaryFile(prefix="keye-reward-out-")
        out_fd = os.open(f"/proc/self/fd/{self._out.fileno()}", os.O_WRONLY | os.O_APPEND)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "rewards.reward_process", str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),), stdin=subprocess.DEVNULL, stdout=out_fd, stderr=out_fd,
                start_new_session=True)  # its own process group: whatever the reward starts dies with it
        finally:
            os.close(out_fd)
            child_sock.close()
        request_id = channel.new_id()
        channel.send(self._sock, request_id, ("load", sys.path, self.spec, self.options, self.threads))
        if not channel.readable(self._sock, self.limits.startup_s):
            self.close()
            raise RewardLoadError(f"reward {self.spec!r} did not load within startup_s={self.limits.startup_s:g}s")
        try:
            kind, *payload = channel.receive_reply(self._sock, request_id, time.monotonic() + 5.0)
        except (EOFError, ConnectionError):
            kind, payload = "error", [f"the process exited ({_exit_text(self._proc.wait())}): "
                                      f"{self._read_output()[-2000:]}"]
        except channel.ChannelError as error:
            kind, payload = "error", [f"reward {self.spec!r} wrote into its reply channel while loading: the "
                                      f"parent read {error}"]
        if kind != "ready":
            self.close()
            raise RewardLoadError(payload[0])
        return payload[0], payload[1]

    def _restart(self) -> None:
        self.close()
        self.replaced += 1
        self._start()

    def close(self) -> None:
        """Kill the child and everything it started: stopped first, so it starts nothing more, then its
        descendants (a subreaper, it keeps even ``setsid`` and double-forked ones under it), then itself."""
        if self._proc is not None:
            if self._proc.poll() is None:  # not reaped yet, so its pid cannot belong to another process
                os.kill(self._proc.pid, signal.SIGSTOP)
                end_descendants(self._proc.pid)
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)  # the group, reaped leader or not
            except (ProcessLookupError, PermissionError):
                pass
            self._proc.wait()
        for handle in (self._sock, self._out):
            if handle is not None:
                handle.close()
        self._proc = self._sock = self._out = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 (interpreter shutdown: modules may be gone)
            pass

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _rss_mb(self) -> float:
        try:
            with open(f"/proc/{self._proc.pid}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, IndexError, ValueError):
            return 0.0

    def _read_output(self) -> str:
        self._out.seek(0)
        data = self._out.read(SHOWN_OUTPUT_BYTES + 1)
        text = printable(data[:SHOWN_OUTPUT_BYTES].decode("utf-8", errors="replace"))
        return text + ("\n[reward output truncated]\n" if len(data) > SHOWN_OUTPUT_BYTES else "")

    def _show_output(self) -> None:
        """Copy what the reward printed during the call to stderr (bounded), then empty the file."""
        if os.fstat(self._out.fileno()).st_size:
            sys.stderr.write(self._read_output())
            sys.stderr.flush()
            self._out.truncate(0)


def printable(text: str) -> str:
    r"""`text` with its control characters (ESC above all) written out as ``\x1b``, tab and newline kept: what a
    reward prints reaches a terminal, where it must not clear the screen, retitle the window, recolour what
    follows or, with a right-to-left override (``\u202e``), show text in another order than it has. (The rule
    of `posttrain.viewer.terminal.printable`, which shows trace text.)

    >>> printable("red \x1b[31mtext\x1b[0m\a\tend \u202eevil\u202c\n")
    'red \\x1b[31mtext\\x1b[0m\\x07\tend \\u202eevil\\u202c\n'
    """
    return _CONTROL.sub(_escape, text)


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def end_descendants(root: int, wait_s: float = 2.0) -> None:
    """SIGKILL every live descendant of `root` (found through /proc's parent links) until none is left: killing
    a parent hands its children to `root`, a subreaper, where the next round finds them."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        live = _descendants(root)
        if not live:
            return
        for pid in live:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.005)


def _descendants(root: int) -> list[int]:
    """The pids below `root` that are not zombies (a zombie is already dead: init reaps it once `root` dies)."""
    children: dict[int, list[int]] = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()  # the name in parentheses may hold anything
        except (OSError, IndexError):
            continue
        if fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], [root]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


# ------------------------------------------------------------------------------------------------ child
def score_call(reward, samples: list) -> list[RewardResult]:
    """One call of the reward: a result per sample, every failure as that call's error (the child here calls it, and
    so does a reward server, `rewards.model_server`)."""
    start = time.perf_counter()
    try:
        raw = reward(samples)
    except InvalidReward as error:
        return [RewardResult.failed("invalid", str(error), time.perf_counter() - start) for _ in samples]
    except BaseException as error:  # noqa: BLE001 (SystemExit or KeyboardInterrupt from a reward fails it too)
        message = describe(error, getattr(reward, "fn", None))
        return [RewardResult.failed("exception", message, time.perf_counter() - start) for _ in samples]
    seconds = (time.perf_counter() - start) / max(1, len(samples))
    return [_result(value, reward.spec, seconds) for value in raw]


def _result(value, spec: str, seconds: float) -> RewardResult:
    if isinstance(value, RewardResult):  # a combination's answer, its components already checked
        value.seconds = seconds
        return value
    try:
        total, components = normalize(value, spec)
    except InvalidReward as error:
        return RewardResult.failed("invalid", str(error), seconds)
    # None: "not applicable" (TRL's convention): recorded, and skipped so it never trains as 0.0
    return RewardResult(total=total, components=components, seconds=seconds, skipped=total is None)


def _load(sock: socket.socket):
    request_id, (_, path, spec, options, threads) = channel.receive(sock)
    sys.path[:] = path  # the parent's path: `module:func` specs resolve as they would there
    try:
        from rewards.registry import load_reward

        reward = load_reward(spec, **options)
        if threads and "torch" in sys.modules:  # a model-based reward: only the CPUs its worker was given
            sys.modules["torch"].set_num_threads(max(1, int(math.ceil(threads))))
    except BaseException as error:  # noqa: BLE001
        message = str(error) if type(error).__name__ == "RewardSpecError" else describe(error)
        channel.send(sock, request_id, ("error", message))
        raise SystemExit(1)
    channel.send(sock, request_id, ("ready", reward.batched, reward.spec))
    return reward


def _die_with_parent() -> None:
    """Linux: SIGKILL this child when the parent dies, so a reward stuck in C never outlives its worker; and be
    a subreaper, so whatever the reward starts (``setsid`` or double-forked) stays below this process, where
    `RewardProcess.close` finds and kills it. (Orphans that exit stay zombies until this process ends: reaping
    them here would steal exit statuses from the reward's own ``subprocess`` calls.)"""
    import ctypes

    PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0 or libc.prctl(PR_SET_CHILD_SUBREAPER, 1) != 0:
        raise OSError(ctypes.get_errno(), "reward process: prctl failed")


def child_main(fd: int) -> None:
    _die_with_parent()
    sock = socket.socket(fileno=fd)
    reward = _load(sock)
    while True:
        try:
            request_id, (_, samples) = channel.receive(sock)
        except EOFError:  # the parent closed: nothing more to score
            return
        results = score_call(reward, samples)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            channel.send(sock, request_id, results)
        except Exception as error:  # noqa: BLE001 (a component value that cannot pickle: nothing was sent)
            channel.send(sock, request_id, [RewardResult.failed("invalid", f"result cannot be returned: "
                                                                           f"{describe(error)}") for _ in samples])


if __name__ == "__main__":
    child_main(int(sys.argv[1]))

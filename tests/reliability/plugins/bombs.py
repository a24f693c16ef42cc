"""Rewards that attack the worker: each sample's `attack` column picks how (tests/reliability)."""

import math
import os
import stat
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection

_HOARD = []  # what the leaking reward keeps between calls


def attack(sample):
    kind = sample.columns.get("attack", "ok")
    if kind == "ok":
        return float(sample.columns.get("value", 1.0))
    if kind == "huge_int":
        return 10**400
    if kind == "none":
        return None
    if kind == "nan":
        return math.nan
    if kind == "raise":
        raise RuntimeError("attack: raised" + "!" * 100_000)  # a long message: records keep a bounded one
    if kind == "leak":
        _HOARD.append(bytearray(160 * 2**20))  # touched pages: resident memory grows by 160 MB per call
        _HOARD[-1][::4096] = b"x" * len(range(0, len(_HOARD[-1]), 4096))
        return 1.0
    if kind == "print":
        chunk = "y" * 2**20
        while True:  # prints without end: only the output bound stops it
            sys.stdout.write(chunk)
    if kind == "chatty":
        print("a line the reward printed")
        return 2.0
    if kind == "forge":  # a reply of its own, written before the real one
        _forge()
        return 1.0
    if kind == "forge_later":  # a reply of its own, written by a thread after the real one
        threading.Thread(target=lambda: (time.sleep(0.2), _forge())).start()
        return 1.0
    if kind == "setsid":  # a sleeper in a session of its own, and one orphaned by its exiting parent
        tag = sample.columns["tag"]
        subprocess.Popen(["sleep", tag], start_new_session=True)
        subprocess.run(["sh", "-c", f"setsid sleep {tag} > /dev/null 2>&1 &"], check=True)
        return 1.0
    raise AssertionError(f"unknown attack {kind}")


def _forge() -> None:
    """Write a 99.0 reply, framed as multiprocessing.connection frames it, into every socket this process holds
    (the reward's reply channel is one of them: it is found by type, not by name)."""
    from rewards.result import RewardResult

    for name in os.listdir("/proc/self/fd"):
        try:
            if stat.S_ISSOCK(os.fstat(int(name)).st_mode):
                Connection(os.dup(int(name))).send([RewardResult(total=99.0)])
        except OSError:
            continue

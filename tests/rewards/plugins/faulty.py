"""Rewards that misbehave on purpose; each sample's `behaviour` column picks how (pool isolation tests)."""

import ctypes
import math
import os
import time


def behave(sample):
    behaviour = sample.columns.get("behaviour", "ok")
    if behaviour == "ok":
        return float(sample.columns.get("value", 1.0))
    if behaviour == "raise":
        raise RuntimeError("boom")
    if behaviour == "hang":
        time.sleep(3600)
    if behaviour == "nan":
        return math.nan
    if behaviour == "inf":
        return math.inf
    if behaviour == "wrong_type":
        return "1.0"
    if behaviour == "exit":
        os._exit(3)
    if behaviour == "segfault":
        ctypes.string_at(0)
    if behaviour == "gil_hang":  # C loop holding the GIL: the worker's watchdog thread never runs
        sum(range(10**15))
    if behaviour == "escapes":  # terminal control sequences, printed
        print("clear \x1b[2J retitle \x1b]0;pwned\x07 red \x1b[31m")
        return 1.0
    if behaviour == "kill_worker":  # SIGKILL the reward process's parent: in a Ray pool, the worker actor
        os.kill(os.getppid(), 9)
        time.sleep(60)
    raise AssertionError(f"unknown behaviour {behaviour}")


def batched_lengths(prompts, completions, behaviour, **kwargs):
    """TRL-style: one call per chunk; raises if any sample in it says so."""
    if "raise" in behaviour:
        raise RuntimeError("batched boom")
    return [float(len(c if isinstance(c, str) else c[0]["content"])) for c in completions]

"""Rewards that attack the worker: each sample's `attack` column picks how (tests/reliability)."""

import math
import sys

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
    raise AssertionError(f"unknown attack {kind}")

"""The reward worker role: score a chunk of samples with one reward, isolating each sample's failure.

`RewardWorker` is a plain class (the pool applies `ray.remote` where it launches actors; the CLI uses it
in-process). The reward runs in a daemon watchdog thread so that a per-sample deadline holds without signals
(math-verify and sympy cannot use `signal.alarm` outside the main thread). What each failure becomes:

- the function raises                     -> ``error="exception"`` with the type, message and location;
- it returns NaN/inf/a wrong type/count   -> ``error="invalid"``;
- it misses the deadline                  -> ``error="timeout"``; its thread cannot be stopped, so the worker
  marks itself tainted, returns what it has (unscored samples as None) and the pool replaces it;
- it kills the process (os._exit, segfault) -> nothing returns; the pool sees the actor die (``crash``).

A batched reward (TRL, reward models) is called once per chunk; if that call raises, each sample is retried
alone, so one bad sample does not fail its neighbours. This module knows nothing about Ray or the pool.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import traceback
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from queue import SimpleQueue

from rewards.registry import load_reward
from rewards.result import InvalidReward, RewardResult, normalize
from rewards.sample import Sample


@dataclass
class WorkerReply:
    results: list[RewardResult | None]  # None: not scored here (the pool sends it elsewhere)
    tainted: bool = False  # a reward thread is stuck: replace this worker
    pid: int = field(default_factory=os.getpid)


class _Watchdog:
    """One daemon thread that runs calls; the caller waits with a deadline. Daemon, so a stuck call never
    blocks interpreter exit."""

    def __init__(self):
        self._jobs: SimpleQueue = SimpleQueue()
        threading.Thread(target=self._loop, name="reward-call", daemon=True).start()

    def _loop(self) -> None:
        while True:
            fn, args, future = self._jobs.get()
            try:
                future.set_result(fn(*args))
            except BaseException as error:  # noqa: BLE001 (SystemExit from a reward is a failure too)
                future.set_exception(error)

    def call(self, fn, args: tuple, timeout: float):
        future: Future = Future()
        self._jobs.put((fn, args, future))
        return future.result(timeout=timeout)


def describe(error: BaseException) -> str:
    """`Type: message (at file:line)` of the innermost frame, for error records."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


class RewardWorker:
    def __init__(self, reward, options: dict | None = None, threads: int | None = None):
        self.reward = load_reward(reward, **(options or {}))
        self._watchdog = _Watchdog()
        self.tainted = False
        if threads and "torch" in sys.modules:  # a model-based reward: use only the CPUs this worker was given
            sys.modules["torch"].set_num_threads(max(1, int(math.ceil(threads))))

    def ready(self) -> int:
        return os.getpid()

    def score(self, samples: list[Sample], deadline_s: float) -> WorkerReply:
        """Score `samples`, each within `deadline_s` seconds (a batched call gets deadline_s per sample)."""
        if self.tainted:
            return WorkerReply([None] * len(samples), tainted=True)
        if self.reward.batched and len(samples) > 1:
            reply = self._score_batch(samples, deadline_s)
            if reply is not None:
                return reply
        results: list[RewardResult | None] = []
        for sample in samples:
            if self.tainted:
                results.append(None)
                continue
            results.append(self._score([sample], deadline_s)[0])
        return WorkerReply(results, tainted=self.tainted)

    def _score_batch(self, samples: list[Sample], deadline_s: float) -> WorkerReply | None:
        results = self._score(samples, deadline_s * len(samples))
        if self.tainted:  # cannot tell which sample hung: the pool retries them one by one elsewhere
            return WorkerReply([None] * len(samples), tainted=True)
        if any(r.error == "exception" for r in results):
            return None  # retry one by one so the raising sample is found
        return WorkerReply(results)

    def _score(self, samples: list[Sample], timeout: float) -> list[RewardResult]:
        start = time.perf_counter()
        try:
            raw = self._watchdog.call(self.reward, (samples,), timeout)
        except FutureTimeout:
            self.tainted = True
            return self._failed(samples, "timeout", f"reward {self.reward.spec!r} gave no result within "
                                                    f"{timeout:g}s", start)
        except InvalidReward as error:
            return self._failed(samples, "invalid", str(error), start)
        except BaseException as error:  # noqa: BLE001
            return self._failed(samples, "exception", describe(error), start)
        seconds = (time.perf_counter() - start) / len(samples)
        return [self._result(value, seconds) for value in raw]

    @staticmethod
    def _failed(samples: list, kind: str, message: str, start: float) -> list[RewardResult]:
        seconds = time.perf_counter() - start
        return [RewardResult.failed(kind, message, seconds) for _ in samples]

    def _result(self, value, seconds: float) -> RewardResult:
        try:
            total, components = normalize(value, self.reward.spec)
        except InvalidReward as error:
            return RewardResult.failed("invalid", str(error), seconds)
        return RewardResult(total=total, components=components, seconds=seconds)

"""The reward worker role: score a chunk of samples with one reward, isolating each sample's failure.

`RewardWorker` is a plain class (the pool applies `ray.remote` where it launches actors; the CLI uses it
without Ray). The reward itself runs in a child process (`rewards.reward_process`) that is killed when a call
misses its deadline, grows past its memory bound or prints past its output bound, and replaced before the
next call; so a bad sample costs the deadline plus a child restart (about a second for math-verify), never
the chunk, and the samples after it are scored normally. What each failure becomes:

- the function raises                          -> ``error="exception"`` with the type, message and location;
- it returns NaN/inf/10**400/a wrong type/count -> ``error="invalid"``;
- it misses the deadline                       -> ``error="timeout"``;
- it exceeds ``memory_mb`` / ``output_mb``     -> ``error="memory"`` / ``"output"``;
- it writes into its reply channel             -> ``error="channel"`` (its process is replaced);
- it kills its process (os._exit, segfault)    -> retried once in a fresh process, then ``error="crash"``
  (a process can also die for reasons that are not the sample's).
A reward returning None ("not applicable") gets no error but ``skipped=True``: it never trains as 0.0.

A batched reward (TRL, reward models) is called once per chunk; if that call fails, each sample is retried
alone, so one bad sample does not fail its neighbours. This module knows nothing about Ray or the pool.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import BeforeValidator

from rewards.result import RewardResult
from rewards.reward_process import ProcessLimits, RewardProcess
from rewards.sample import Sample


@dataclass
class WorkerReply:
    results: list[RewardResult | None]  # None: not scored here (the pool sends it elsewhere)
    pid: int = field(default_factory=os.getpid)
    restarts: int = 0  # reward processes killed and replaced during this call


def check_deadline(deadline_s) -> float:
    """A per-sample deadline must be a finite number of seconds > 0 (NaN would never expire)."""
    if isinstance(deadline_s, bool) or not isinstance(deadline_s, (int, float)) or not math.isfinite(deadline_s) \
            or deadline_s <= 0:
        raise ValueError(f"reward deadline must be a finite number of seconds > 0, got {deadline_s!r}")
    return float(deadline_s)


Seconds = Annotated[float, BeforeValidator(check_deadline)]  # a deadline field of a settings model


class RewardWorker:
    def __init__(self, reward, options: dict | None = None, threads: int | None = None,
                 memory_mb: int = 4096, output_mb: int = 16):
        limits = ProcessLimits(memory_mb=memory_mb, output_mb=output_mb)
        self.process = RewardProcess(reward, options, limits, threads=threads)

    def ready(self) -> int:
        return os.getpid()

    @property
    def replaced(self) -> int:
        """Reward processes killed and replaced so far (timeouts, memory, output, crashes)."""
        return self.process.replaced

    def score(self, samples: list[Sample], deadline_s: float) -> WorkerReply:
        """Score `samples`, each within `deadline_s` seconds (a batched call gets deadline_s per sample)."""
        deadline_s, before = check_deadline(deadline_s), self.replaced
        if self.process.batched and len(samples) > 1:
            results = self.process.call(samples, deadline_s * len(samples))
            if all(r.error in (None, "invalid") for r in results):  # invalid values are per sample already
                return WorkerReply(results, restarts=self.replaced - before)
            # the call raised, hung or died: score alone so only the guilty sample is marked
        results = [self._score_one(sample, deadline_s) for sample in samples]
        return WorkerReply(results, restarts=self.replaced - before)

    def _score_one(self, sample: Sample, deadline_s: float) -> RewardResult:
        result = self.process.call([sample], deadline_s)[0]
        if result.error == "crash":  # blame the sample only if it kills a fresh process too
            result = self.process.call([sample], deadline_s)[0]
        return result

    def close(self) -> None:
        self.process.close()

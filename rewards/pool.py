"""The reward worker pool: K `RewardWorker` Ray actors under `runtime.supervised`, and what their failures mean.

A batch is cut into chunks, one in flight per worker. Each worker enforces the per-sample deadline itself by
killing the reward's child process (see `worker`, `reward_process`), so a stuck sample costs its chunk the
deadline plus a restart; the driver keeps a hard deadline per chunk (chunk size x (2 x deadline + grace) +
grace, the most a worker doing its job can take) as a backstop for a worker actor that stops answering.
Failures are localised, then recorded:
- a worker that dies (os._exit, segfault) or stops answering is killed and replaced; its chunk is retried
  one sample per call, so the sample that kills a worker is the one marked ``crash`` (or ``timeout``); a
  sample is blamed for a crash only when it kills a second worker (workers also die for other reasons).
Every sample ends with a total or an error; `on_error` then decides what training sees: ``zero`` (the failed
part adds 0: a combined reward keeps the credit of its components that scored, error kept), ``skip`` (sample
excluded: no total, no loss, no part in its group's baseline), or ``fail`` (raise after the batch, with all
errors). The policy,
error counts and replacements are in the batch metrics. This module knows nothing about what the reward
computes, and nothing about the rest of the RL step.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rewards.registry import validate_reward
from rewards.result import RewardResult, summarize
from rewards.sample import Sample
from rewards.worker import RewardWorker, Seconds, WorkerReply
from runtime.supervised import Outcome, Supervised, error_line


class PoolConfig(BaseModel):
    """The pool's settings; a recipe's `reward` section is one (with what the RL loop reads besides), so every key
    here is a recipe key."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN or inf is always a mistake

    num_workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(0.25, gt=0)  # small fractions: K workers fit beside learners on 2 cores
    timeout_s: Seconds = 10.0  # per sample
    on_error: Literal["zero", "skip", "fail"] = "zero"
    chunk_size: int | None = Field(None, ge=1)  # None: ceil(batch / (2 * workers)), so work spreads and balances
    grace_s: float = Field(5.0, gt=0)  # beyond the worker's own deadline, before the driver declares it hung
    startup_timeout_s: float = Field(120.0, gt=0)
    max_replacements: int = Field(8, ge=0)  # per batch; a reward that kills every worker stops being retried
    spare: bool = True  # after a first replacement, keep a started worker in reserve so the next is instant
    memory_mb: int = Field(4096, gt=0)  # resident memory of a worker's reward process before it is replaced
    output_mb: int = Field(16, gt=0)  # what one reward call may print before its process is replaced


@dataclass
class ScoredBatch:
    results: list[RewardResult]
    metrics: dict


class RewardFailed(RuntimeError):
    """Raised by `on_error: fail` after the whole batch was scored; carries the results and metrics."""

    def __init__(self, message: str, batch: ScoredBatch):
        super().__init__(message)
        self.batch = batch


class RewardPool:
    def __init__(self, reward, options: dict | None = None, config: PoolConfig | None = None):
        import ray

        if not ray.is_initialized():
            raise RuntimeError("RewardPool needs a running Ray cluster: call ray.init(...) first or use "
                               "`with runtime.local_ray.local_ray(2): ...`")
        validate_reward(reward, **(options or {}))  # a broken spec fails here, not inside K actors
        self.reward, self.options = reward, options or {}
        c = self.config = config or PoolConfig()
        remote = ray.remote(RewardWorker).options(num_cpus=c.cpus_per_worker, max_restarts=0)
        try:  # a worker starts in seconds: it imports the reward and its dependencies
            self.workers = Supervised(remote, (reward, self.options, c.cpus_per_worker, c.memory_mb, c.output_mb),
                                      c.num_workers, startup_timeout_s=c.startup_timeout_s, grace_s=c.grace_s,
                                      max_replacements=c.max_replacements, spare=c.spare)
        except Exception as error:
            raise RuntimeError(f"reward workers for {reward!r} failed to start: {error}") from error

    @property
    def actors(self) -> list:
        return [slot.actor for slot in self.workers.slots]

    def close(self) -> None:
        """Close each worker's reward process first (it kills everything the reward started, ``setsid`` ones
        included), waiting at most `grace_s`; then kill the actors. ``ray.kill`` alone would leave those
        descendants running: the reward process dies with its actor, but what it started does not."""
        self.workers.close(lambda worker: worker.close.remote())

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------- scoring
    def score(self, samples: list[Sample]) -> ScoredBatch:
        start = time.perf_counter()
        results, metrics = self.results(samples)
        return finish_batch(results, self.config.on_error, metrics, start)

    def results(self, samples: list[Sample]) -> tuple[list[RewardResult], dict]:
        """Every sample's result before `on_error` is applied, and the pool's replacement counts: what `score`
        reports, for a caller that merges these results with other scores first (`rewards.served`)."""
        self._crashed_once, self._restarts = set(), 0
        self.workers.new_round()  # workers that died or hung while idle are replaced, no sample blamed
        results: list[RewardResult | None] = [None] * len(samples)
        self._run(samples, results)
        return results, {"reward/workers_replaced": self.workers.replaced, "reward/processes_replaced": self._restarts}

    def _chunks(self, n: int) -> list[list[int]]:
        size = self.config.chunk_size or max(1, math.ceil(n / (2 * len(self.workers.slots))))
        return [list(range(i, min(n, i + size))) for i in range(0, n, size)]

    def _run(self, samples: list[Sample], results: list) -> None:
        queue, deadline_s, grace = deque(self._chunks(len(samples))), self.config.timeout_s, self.config.grace_s
        while queue or self.workers.busy():
            while queue and self.workers.exhausted:
                self._give_up(queue.popleft(), results)
            for slot in self.workers.free()[:len(queue)]:
                indices = queue.popleft()
                chunk = [samples[i] for i in indices]
                hard = len(indices) * (2 * deadline_s + grace) + grace  # the most a worker doing its job takes
                self.workers.send(slot, indices, hard, lambda worker: worker.score.remote(chunk, deadline_s))
            for outcome in self.workers.wait():
                self._ended(outcome, results, queue)

    def _ended(self, outcome: Outcome, results: list, queue: deque) -> None:
        indices = outcome.item
        if outcome.kind == "answered":
            self._collect(outcome.reply, indices, results, queue)
        elif outcome.kind == "failed":  # the call itself failed (e.g. a sample that cannot pickle)
            for i in indices:
                results[i] = RewardResult.failed("exception", f"reward worker call failed: {outcome.error}")
        elif outcome.kind == "died":
            if len(indices) == 1 and indices[0] not in self._crashed_once:
                self._crashed_once.add(indices[0])  # a worker can die for other reasons: blame on the 2nd
                queue.append(indices)
            else:
                message = f"reward worker process died while scoring ({error_line(outcome.error)})"
                self._retry_or_fail(indices, "crash", message, results, queue)
        else:
            self._retry_or_fail(indices, "timeout", f"worker gave no answer within its hard deadline "
                                f"({self.config.timeout_s:g}s per sample, twice, plus {self.config.grace_s:g}s "
                                f"grace); it was killed and replaced", results, queue)

    def _collect(self, reply: WorkerReply, indices: list[int], results: list, queue: deque) -> None:
        self._restarts += reply.restarts
        leftover = [i for i, r in zip(indices, reply.results) if r is None]
        for i, r in zip(indices, reply.results):
            if r is not None:
                results[i] = r
        if leftover and len(leftover) == len(indices) and len(leftover) > 1:
            queue.extend([i] for i in leftover)  # a batched call hung: find the culprit one by one
        elif leftover:
            queue.append(leftover)  # never reached: innocent, score them elsewhere

    @staticmethod
    def _retry_or_fail(indices: list[int], kind: str, message: str, results: list, queue: deque) -> None:
        if len(indices) == 1:
            results[indices[0]] = RewardResult.failed(kind, message)
        else:
            queue.extend([i] for i in indices)

    def _give_up(self, indices: list[int], results: list) -> None:
        for i in indices:
            results[i] = RewardResult.failed(
                "crash", f"not scored: {self.workers.strikes} workers were replaced in this batch (limit "
                         f"max_replacements={self.config.max_replacements}); the reward keeps killing or hanging "
                         f"its workers")


def finish_batch(results: list[RewardResult], on_error: str, metrics: dict, start: float) -> ScoredBatch:
    """Apply `on_error`, summarise the batch (with the scorer's own `metrics`) and, under ``fail``, raise after
    the whole batch was scored, naming the first failures."""
    batch = ScoredBatch(results, {})
    errors = apply_policy(results, on_error)
    batch.metrics = {**summarize(results), "reward/on_error": on_error, **metrics,
                     "timing/reward_s": time.perf_counter() - start}
    if errors and on_error == "fail":
        shown = "; ".join(f"sample {i}: {r.error}: {r.message}" for i, r in errors[:5])
        raise RewardFailed(f"{len(errors)} of {len(results)} samples failed ({shown})", batch)
    return batch


def apply_policy(results: list[RewardResult], on_error: str) -> list[tuple[int, RewardResult]]:
    """Apply `on_error` to failed samples (their error stays recorded); returns the failed (index, result).
    ``zero`` keeps the credit of a combined reward's components that scored (a failed component adds 0, it does
    not take the others' credit with it); ``skip`` leaves the sample no total at all."""
    errors = [(i, r) for i, r in enumerate(results) if r.error is not None]
    for _, result in errors:
        if on_error == "zero":
            result.total = 0.0 if result.total is None else result.total
        elif on_error == "skip":
            result.skipped, result.total = True, None
    return errors

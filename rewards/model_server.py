"""Reward-model servers: one model-based reward (a reward model, a generative judge) on its own Ray actors.

`ModelServer` is the actor's logic (a plain class, testable without Ray): it loads the reward once, on the GPU
its actor reserved or on its CPUs, and scores a batch with it. `ModelReplicas` is the driver's handle on N of
them (supervised: `runtime.supervised`). A step's samples are cut into batches of `batch_size`, each sent to one
replica at a time:
- ``random``: every batch is assigned to a replica drawn at random (seeded), Keye's dispatch: no feedback, a
  replica's batches wait for it even if another is idle;
- ``least_loaded``: batches wait in one queue, and whichever replica is free takes the next (ties: the replica
  that scored fewest samples this step), so a slow or restarting replica gets less.
Failures are marked per sample as for every reward (`rewards.result`): the reward raising or returning a bad
value is that sample's ``exception`` / ``invalid`` (a batch that raises is scored again one sample at a time, so
only the guilty sample fails); a replica that dies (SIGKILL, out of memory) is replaced and its batch re-sent (a
batch that kills two replicas is split, and a sample that does is ``crash``). After `max_replacements` in one step
the unscored rest is ``crash``; dead replicas are replaced at the next step.

Timeouts. A sample scored alone has `timeout_s`; a batch of n has n x `timeout_s`, at most `batch_timeout_s` (never
less than `timeout_s`): a model scores a batch in one pass, and one hanging sample must not hold 63 others for
64 x `timeout_s`. A batch without an answer by then has its replica killed and replaced, and its samples are scored
again one at a time, each with `timeout_s`, all of them within one more `batch_timeout_s` of time in flight (a wait
for a replica to start does not count: it says nothing about the samples); a sample that times out alone, or is
still unscored when that budget is spent, is ``timeout`` with a message naming the bound, and the others keep their
scores. So a batch's samples have their answers within 2 x `batch_timeout_s` of scoring, plus the starts of the
replicas it had killed (each <= `startup_timeout_s`; past `max_replacements` in a step the rest is ``crash``), plus
any wait for a free replica. With timeout_s 10 s and batch_timeout_s 60 s, a batch of 64 with one hanging sample
costs <= 60 s + 60 s (10 s of it the hang) + the starts of the two replicas killed, where it cost 640 s and the
63 other samples' scores.

Memory. Each answer carries the replica's resident memory; one over `memory_mb` (unset: what it held once its model
was loaded + `MEMORY_HEADROOM_MB`) is replaced after that answer (whose scores stand), with a line on stderr naming
the replica and its size. A replica that is over `memory_mb` as soon as it has loaded fails to start.

Per step, `metrics` holds `reward_server/<name>/...`: latency_s (mean, send to answer), latency_max_s, model_s
(time in the model, summed), batch_size (mean), batches, queue_max (most batches waiting for a replica),
replicas_replaced, errors, rss_max_mb (the largest resident memory a replica reported), and replica_<k>/samples.

A server asked for GPUs is refused before anything starts if the cluster has fewer than replicas x gpus, and
fails to start if torch there sees no CUDA device: it never falls back to CPU. This module knows nothing of the
rule-reward pool or of how scores are combined (`rewards.served`).
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rewards.registry import is_factory, load_reward, resolve, validate_reward
from rewards.result import RewardResult
from rewards.reward_process import score_call
from rewards.sample import Sample
from rewards.worker import Seconds
from runtime.devices import torch_device
from runtime.supervised import Outcome, Supervised, error_line

MEMORY_HEADROOM_MB = 4096  # growth allowed past the loaded model when memory_mb is unset: the pool's memory_mb default


class ServeConfig(BaseModel):
    """One served reward's settings; a recipe's reward component takes one as its `serve` section."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN or inf is always a mistake

    replicas: int = Field(1, ge=1)
    dispatch: Literal["random", "least_loaded"] = "least_loaded"  # random: Keye's; least_loaded: a free replica
    cpus: float = Field(1.0, gt=0)  # Ray CPUs per replica; its torch threads are this, rounded up
    gpus: float = Field(0.0, ge=0)  # GPUs per replica; 0: CPU. More than the cluster has is an error, not CPU
    batch_size: int = Field(64, ge=1)  # samples per call
    # a sample scored alone; a batch of n: n x timeout_s, at most batch_timeout_s. None: the reward pool's
    # timeout_s (`rewards.served`; `default_timeout_s` of a ModelReplicas alone)
    timeout_s: Seconds | None = None
    batch_timeout_s: Seconds = 60.0  # the most one batch waits (never less than timeout_s), and its re-scoring
    # a replica's resident memory before it is replaced; None: what it holds once loaded + MEMORY_HEADROOM_MB
    memory_mb: int | None = Field(None, gt=0)
    startup_timeout_s: float = Field(300.0, gt=0)
    grace_s: float = Field(5.0, gt=0)  # a live replica answers the between-steps health check within this
    max_replacements: int = Field(4, ge=0)  # per step; then the rest is marked crash


@dataclass
class ServerReply:
    results: list[RewardResult]
    model_s: float
    pid: int = field(default_factory=os.getpid)
    rss_mb: float = 0.0  # the replica's resident memory after this batch
    loaded_mb: float = 0.0  # ... and once its model was loaded


# ------------------------------------------------------------------------------------------------ the actor
class ModelServer:
    def __init__(self, spec, options: dict | None = None, cpus: float = 1.0, gpus: float = 0.0,
                 memory_mb: int | None = None):
        import torch

        device = torch_device(gpus, "reward server")
        torch.set_num_threads(max(1, math.ceil(cpus)))
        self.reward = load_reward(spec, **with_device(spec, dict(options or {}), device))
        self.loaded_mb = rss_mb()
        if memory_mb is not None and self.loaded_mb > memory_mb:  # else it would be replaced after every batch
            raise RuntimeError(f"reward server holds {self.loaded_mb:.0f} MB once its model is loaded, over "
                               f"serve.memory_mb={memory_mb}: raise serve.memory_mb, or leave it unset (what a "
                               f"replica holds once loaded + {MEMORY_HEADROOM_MB} MB)")

    def ready(self) -> str:
        """The reward's name (how its scores are logged)."""
        return self.reward.name

    def pid(self) -> int:
        return os.getpid()

    def score(self, samples: list[Sample]) -> ServerReply:
        start = time.perf_counter()
        results = score_call(self.reward, samples)
        if len(samples) > 1 and all(r.error == "exception" for r in results):
            results = [score_call(self.reward, [s])[0] for s in samples]  # only the guilty sample fails
        return ServerReply(results, time.perf_counter() - start, rss_mb=rss_mb(), loaded_mb=self.loaded_mb)


def rss_mb() -> float:
    """This process's resident memory in MB (Linux's /proc, as `rewards.reward_process` reads it)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def with_device(spec, options: dict, device: str) -> dict:
    """Options that put the reward on `device`: a factory taking `device` gets it; one that takes none cannot
    use the GPU it was given, which is an error rather than an idle GPU."""
    if device == "cpu" or "device" in options:
        return options
    fn = resolve(spec) if isinstance(spec, str) else spec
    import inspect

    if not (is_factory(fn) and "device" in inspect.signature(fn).parameters):
        raise ValueError(f"reward {spec!r} takes no `device` option, so it cannot use the GPU its server "
                         f"reserved; serve it with gpus: 0")
    return {**options, "device": device}


# ------------------------------------------------------------------------------------------------ the driver
@dataclass
class _Retries:
    """The samples of a batch that timed out, each scored again alone: together they have `budget_s` of time with
    one of them in flight, so n of them cannot take n x timeout_s; a wait for a replica to start is not counted,
    as it says nothing about the samples."""

    size: int  # of the batch that timed out
    waited_s: float  # what that batch was given
    budget_s: float
    spent_s: float = 0.0
    in_flight: int = 0
    since: float = 0.0  # when the current stretch with one in flight began

    def left(self, now: float) -> float:
        """Seconds of the budget not yet spent.

        >>> r = _Retries(size=4, waited_s=2.0, budget_s=2.0)
        >>> r.sent(10.0); r.sent(10.5); r.back(11.0); r.left(11.25)  # in flight from 10.0 on
        0.75
        >>> r.back(11.5); r.left(20.0)  # none in flight from 11.5 to 20.0: not counted
        0.5
        """
        return self.budget_s - self.spent_s - (now - self.since if self.in_flight else 0.0)

    def sent(self, now: float) -> None:
        if not self.in_flight:
            self.since = now
        self.in_flight += 1

    def back(self, now: float) -> None:
        """One of them answered, timed out or lost its replica."""
        self.in_flight -= 1
        if not self.in_flight:
            self.spent_s += now - self.since


@dataclass
class _Batch:
    indices: list[int]
    deaths: int = 0  # replicas that died while scoring it
    retry: _Retries | None = None  # a sample of a batch that timed out, scored again alone


@dataclass
class _Step:
    results: list
    own: list  # random dispatch: each replica's own queue of batches
    samples: list  # scored by each replica
    shared: deque = field(default_factory=deque)  # least_loaded: batches waiting for any free replica
    latencies: list = field(default_factory=list)
    model_s: float = 0.0
    sent: list = field(default_factory=list)  # sizes of the batches sent
    queue_max: int = 0
    rss_max_mb: float = 0.0


class ModelReplicas:
    """N `ModelServer` actors for one reward, supervised (`runtime.supervised`); `score(samples) -> (results,
    metrics)` (see the module docstring)."""

    def __init__(self, spec, options: dict | None = None, config: ServeConfig | None = None, seed: int = 0,
                 default_timeout_s: float = 30.0):
        """`seed`: random dispatch's; `default_timeout_s`: a sample's when `config.timeout_s` is None."""
        import ray

        if not ray.is_initialized():
            raise RuntimeError("ModelReplicas needs a running Ray cluster: call ray.init(...) first")
        c = config or ServeConfig()
        c = self.config = c if c.timeout_s is not None else c.model_copy(update={"timeout_s": default_timeout_s})
        self.spec, self.options = spec, dict(options or {})
        validate_reward(spec, **self.options)  # a broken spec or option fails here, not inside N actors
        self._check_gpus()
        remote = ray.remote(ModelServer).options(num_cpus=c.cpus, num_gpus=c.gpus, max_restarts=0)
        try:
            self.actors = Supervised(remote, (spec, self.options, c.cpus, c.gpus, c.memory_mb), c.replicas,
                                     startup_timeout_s=c.startup_timeout_s, grace_s=c.grace_s,
                                     max_replacements=c.max_replacements)
        except ray.exceptions.GetTimeoutError as error:
            raise RuntimeError(f"reward server for {spec!r} did not start within {c.startup_timeout_s:g}s: Ray could "
                               f"not place {c.replicas} replicas x ({c.cpus:g} CPUs, {c.gpus:g} GPUs) beside the "
                               f"other actors (free now: {ray.available_resources()}), or loading the model hung; "
                               f"lower serve.cpus / serve.replicas") from error
        except Exception as error:
            raise RuntimeError(f"reward server for {spec!r} failed to start: {error_line(error, -1)}") from error
        self.name = self.actors.ready_replies[0]
        self.rng = random.Random(seed)

    @property
    def replicas(self) -> list:  # the supervised slots, each with its `actor`
        return self.actors.slots

    def _check_gpus(self) -> None:
        import ray

        c = self.config
        have = ray.cluster_resources().get("GPU", 0.0)
        if c.gpus and have + 1e-9 < c.replicas * c.gpus:
            raise RuntimeError(f"reward server for {self.spec!r} asks for {c.replicas} replicas x {c.gpus:g} GPU "
                               f"(serve.replicas x serve.gpus) but the Ray cluster has {have:g} GPUs; run on GPU "
                               f"nodes (cluster.gpus_per_node) or serve it on CPU with gpus: 0")

    def close(self) -> None:
        self.actors.close()

    # ------------------------------------------------------------------------------------------ one step
    def score(self, samples: list[Sample]) -> tuple[list[RewardResult], dict]:
        start, n = time.perf_counter(), len(self.replicas)
        step = _Step([None] * len(samples), [deque() for _ in range(n)], [0] * n)
        self.actors.new_round()  # replicas that died or hang between steps are replaced, no batch blamed
        size = self.config.batch_size
        for i in range(0, len(samples), size):
            batch = _Batch(list(range(i, min(len(samples), i + size))))
            (step.own[self.rng.randrange(n)] if self.config.dispatch == "random" else step.shared).append(batch)
        while self._pending(step):
            self._send(samples, step)
            for outcome in self.actors.wait():
                self._ended(outcome, step)
        return step.results, self._metrics(step, time.perf_counter() - start)

    def _queue_of(self, step: _Step, slot: int) -> deque:
        """Where a batch for `slot` waits: that replica's own queue under random dispatch, else the shared one."""
        return step.own[slot] if self.config.dispatch == "random" else step.shared

    def _pending(self, step: _Step) -> bool:
        return bool(step.shared) or any(step.own) or self.actors.busy()

    def _send(self, samples: list[Sample], step: _Step) -> None:
        """Each free, started replica takes its next batch (its own queue, else the shared one); past
        `max_replacements` in this step, the batches waiting are marked ``crash`` instead."""
        if self.actors.exhausted:
            self._give_up(step)
        self._drop_spent(step)
        for slot in sorted(self.actors.free(), key=lambda k: step.samples[k]):
            queue = step.own[slot] or step.shared
            if not queue:
                continue
            batch, now = queue.popleft(), time.perf_counter()
            if batch.retry is not None:
                batch.retry.sent(now)
            chunk = [samples[i] for i in batch.indices]
            self.actors.send(slot, batch, self._allowed(batch, now), lambda actor: actor.score.remote(chunk))
            step.sent.append(len(batch.indices))
        step.queue_max = max(step.queue_max, len(step.shared) + max(len(q) for q in step.own))

    def _allowed(self, batch: _Batch, now: float) -> float:
        """Seconds a call of `batch` may take (see Timeouts in the module docstring)."""
        c = self.config
        if batch.retry is not None:
            return min(c.timeout_s, batch.retry.left(now))
        return min(c.timeout_s * len(batch.indices), max(c.timeout_s, c.batch_timeout_s))

    def _drop_spent(self, step: _Step) -> None:
        """Mark ``timeout`` the waiting samples of timed-out batches whose re-scoring budget is spent."""
        now = time.perf_counter()
        for queue in [step.shared, *step.own]:
            spent = [b for b in queue if b.retry is not None and b.retry.left(now) <= 0]
            for batch in spent:
                queue.remove(batch)
                self._fail(step, batch.indices, "timeout", self._spent_message(batch.retry))

    def _spent_message(self, retry: _Retries) -> str:
        return (f"not scored: its batch of {retry.size} gave no answer within {retry.waited_s:g}s, and scoring its "
                f"samples again one at a time used up their {retry.budget_s:g}s (serve.batch_timeout_s) before "
                f"this one's turn; raise serve.batch_timeout_s if the model is this slow")

    def _ended(self, outcome: Outcome, step: _Step) -> None:
        batch = outcome.item
        if batch.retry is not None:
            batch.retry.back(time.perf_counter())
        if outcome.kind == "answered":
            self._scored(outcome, step)
        elif outcome.kind == "failed":  # the call itself failed (a sample that cannot be sent)
            self._fail(step, batch.indices, "exception", f"reward server call failed: {error_line(outcome.error)}")
        elif outcome.kind == "died":
            self._died(outcome, step)
        else:
            self._hung(outcome, step)

    def _scored(self, outcome: Outcome, step: _Step) -> None:
        reply: ServerReply = outcome.reply
        step.latencies.append(outcome.latency_s)
        step.model_s += reply.model_s
        step.samples[outcome.slot] += len(outcome.item.indices)
        for i, result in zip(outcome.item.indices, reply.results):
            step.results[i] = result
        self._check_memory(outcome.slot, reply, step)

    def _check_memory(self, slot: int, reply: ServerReply, step: _Step) -> None:
        """Replace a replica grown past its memory bound (the scores it just gave stand)."""
        step.rss_max_mb = max(step.rss_max_mb, reply.rss_mb)
        bound = self.config.memory_mb or reply.loaded_mb + MEMORY_HEADROOM_MB
        if reply.rss_mb <= bound:
            return
        setting = f"memory_mb={self.config.memory_mb}" if self.config.memory_mb else \
            f"{reply.loaded_mb:.0f} MB once loaded + {MEMORY_HEADROOM_MB} MB, memory_mb unset"
        print(f"reward server {self.name!r}: replica {slot} (pid {reply.pid}) holds {reply.rss_mb:.0f} MB, over its "
              f"bound of {bound:.0f} MB ({setting}); replacing it", file=sys.stderr, flush=True)
        self.actors.replace(slot)

    def _died(self, outcome: Outcome, step: _Step) -> None:
        """Its replica was replaced: re-send the batch, or split it, or blame its one sample."""
        batch = outcome.item
        batch.deaths += 1
        if batch.deaths == 1:
            self._queue_of(step, outcome.slot).appendleft(batch)
        elif len(batch.indices) > 1:
            self._queue_of(step, outcome.slot).extendleft(reversed([_Batch([i], deaths=1) for i in batch.indices]))
        else:
            self._fail(step, batch.indices, "crash", f"reward server died while scoring, twice "
                                                      f"({error_line(outcome.error)})")

    def _hung(self, outcome: Outcome, step: _Step) -> None:
        """Its replica was replaced: a batch's samples are scored again alone, in one budget; one is ``timeout``."""
        batch, waited = outcome.item, outcome.allowed_s
        if len(batch.indices) > 1:
            retry = _Retries(len(batch.indices), waited, max(self.config.timeout_s, self.config.batch_timeout_s))
            self._queue_of(step, outcome.slot).extendleft(reversed([_Batch([i], retry=retry) for i in batch.indices]))
        else:
            self._fail(step, batch.indices, "timeout", self._timeout_message(batch, waited))

    def _timeout_message(self, batch: _Batch, waited: float) -> str:
        text = f"reward server gave no answer within {waited:g}s for this sample alone"
        retry = batch.retry
        if retry is not None:
            text += f", scored again after its batch of {retry.size} gave none within {retry.waited_s:g}s"
            if waited < self.config.timeout_s:
                text += f" (what was left of their {retry.budget_s:g}s, serve.batch_timeout_s)"
        return text + "; the replica was killed and replaced"

    def _give_up(self, step: _Step) -> None:
        """Mark every batch still waiting ``crash``; the batches in flight on live replicas still finish."""
        message = (f"not scored: {self.actors.strikes} reward server replicas were replaced in this step (limit "
                   f"max_replacements={self.config.max_replacements}); the model keeps dying, hanging or failing to "
                   f"start")
        for queue in [step.shared, *step.own]:
            self._fail(step, [i for b in queue for i in b.indices], "crash", message)
            queue.clear()

    @staticmethod
    def _fail(step: _Step, indices: list[int], kind: str, message: str) -> None:
        for i in indices:
            step.results[i] = RewardResult.failed(kind, message)

    def _metrics(self, step: _Step, wall_s: float) -> dict:
        p = f"reward_server/{self.name}/"
        lat = step.latencies
        metrics = {p + "latency_s": sum(lat) / len(lat) if lat else 0.0, p + "latency_max_s": max(lat, default=0.0),
                   p + "model_s": step.model_s, p + "wall_s": wall_s, p + "batches": len(step.sent),
                   p + "batch_size": sum(step.sent) / len(step.sent) if step.sent else 0.0,
                   p + "queue_max": step.queue_max, p + "replicas_replaced": self.actors.replaced,
                   p + "rss_max_mb": step.rss_max_mb,
                   p + "errors": sum(r is not None and r.error is not None for r in step.results)}
        metrics.update({f"{p}replica_{k}/samples": n for k, n in enumerate(step.samples)})
        return metrics

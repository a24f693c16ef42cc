"""A supervised pool of Ray actors: the one mechanism under the reward worker pool, the reward-model servers and
the distillation teachers (STYLE.md rule 11: hand-written copies of it had drifted apart).

`Supervised` keeps N actors of one class in numbered slots: it launches them and waits for each `ready()`; the
caller sends one call at a time to a free slot, with a deadline and a work item of its own; `wait` says how calls
ended (`Outcome`): ``answered``, ``failed`` (the call raised or could not be sent; the actor lives), ``died`` (its
process is gone) or ``hung`` (no answer by the deadline). A dead or hung actor is killed and another started in its
slot; it takes calls once it answers `ready()`, and is replaced in turn if it dies starting or does not answer
within `startup_timeout_s`. The outcome carries the work item back, to re-send, split or blame. `new_round` zeroes
the round's counts and replaces actors that died or hang while idle; replacements the round's own calls caused are
strikes, and after `max_replacements` strikes `exhausted` tells the caller to stop sending. With `spare`, a started
actor is kept in reserve after the first replacement, so the next one need not wait for a start.

Boundary: knows nothing of what a call computes, what a work item is, or any retry or blame policy. The actor
class needs a `ready()` method; launch it with `max_restarts=0`, so that a death is Ray's `RayActorError`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable


@dataclass
class Slot:
    actor: Any
    starting: Any = None  # the `ready()` ref while the actor starts
    call: Any = None  # the ref of the call in flight
    item: Any = None  # the caller's work item of that call
    sent: float = 0.0
    deadline: float = 0.0  # of the call in flight, or of the start


@dataclass
class Outcome:
    kind: str  # "answered" | "failed" | "died" | "hung" (see the module docstring)
    slot: int
    item: Any
    reply: Any = None  # the answer, when answered
    error: Exception | None = None  # Ray's error, when failed or died
    latency_s: float = 0.0  # from send to end
    allowed_s: float = 0.0  # the deadline the call had


class Supervised:
    def __init__(self, remote_class, args: tuple, size: int, *, startup_timeout_s: float, grace_s: float = 5.0,
                 max_replacements: int = 4, spare: bool = False):
        """`remote_class`: a `ray.remote` class with its options; `args`: its constructor's. If the actors do not all
        start within `startup_timeout_s`, they are killed and Ray's error is raised."""
        import ray

        self._launch = partial(remote_class.remote, *args)
        self.startup_timeout_s, self.grace_s, self.max_replacements = startup_timeout_s, grace_s, max_replacements
        self.keep_spare, self.spare, self.replaced, self.strikes = spare, None, 0, 0
        self.slots = [Slot(self._launch()) for _ in range(size)]
        try:
            self.ready_replies = ray.get([s.actor.ready.remote() for s in self.slots], timeout=startup_timeout_s)
        except Exception:
            self.close()
            raise

    def new_round(self) -> None:
        """Zero the round's counts; replace (without a strike) idle actors that do not answer `ready()` within
        `grace_s`, so no work item is blamed for them."""
        import ray

        self.replaced = self.strikes = 0
        idle = {self.slots[k].actor.ready.remote(): k for k in self.free()}
        done, _ = ray.wait(list(idle), num_returns=len(idle), timeout=self.grace_s) if idle else ([], [])
        for ref, k in idle.items():
            if ref not in done or not _answers(ref):
                self.replace(k, strike=False)

    @property
    def exhausted(self) -> bool:
        return self.strikes >= self.max_replacements

    def free(self) -> list[int]:
        """Slots whose actor has started and has no call in flight."""
        return [k for k, s in enumerate(self.slots) if s.starting is None and s.call is None]

    def busy(self) -> bool:
        return any(s.call is not None for s in self.slots)

    def send(self, slot: int, item, allowed_s: float, call: Callable[[Any], Any]) -> None:
        """Start `call(actor)` (e.g. `lambda a: a.score.remote(batch)`) on a free slot, for `item`, answering within
        `allowed_s` seconds."""
        s = self.slots[slot]
        s.item, s.sent = item, time.perf_counter()
        s.deadline = s.sent + allowed_s
        s.call = call(s.actor)

    def wait(self) -> list[Outcome]:
        """Wait until a call ends, an actor starts or a deadline passes; return the calls that have ended (a reply
        that is in by then is taken, even past its deadline). Returns at once when nothing is in flight."""
        import ray

        watched = {s.starting if s.call is None else s.call: k for k, s in enumerate(self.slots)
                   if s.call is not None or s.starting is not None}
        if not watched:
            return []
        timeout = max(0.0, min(self.slots[k].deadline for k in watched.values()) - time.perf_counter())
        ray.wait(list(watched), num_returns=1, timeout=timeout)
        done, _ = ray.wait(list(watched), num_returns=len(watched), timeout=0)  # everything in, not just the first
        outcomes = []
        for ref in done:  # one per slot: handling it changes that slot only
            k = watched[ref]
            if self.slots[k].call is not None:
                outcomes.append(self._collect(k))
            else:
                self._started(k)
        return outcomes + self._expire()

    def _take(self, k: int, kind: str) -> Outcome:
        """The call in slot `k` is over: its outcome so far, the slot free of it."""
        s = self.slots[k]
        outcome = Outcome(kind, k, s.item, latency_s=time.perf_counter() - s.sent, allowed_s=s.deadline - s.sent)
        s.call = s.item = None
        return outcome

    def _collect(self, k: int) -> Outcome:
        import ray

        ref = self.slots[k].call
        outcome = self._take(k, "answered")
        try:
            outcome.reply = ray.get(ref)
        except ray.exceptions.RayActorError as error:
            outcome.kind, outcome.error = "died", error
            self.replace(k)
        except ray.exceptions.RayError as error:
            outcome.kind, outcome.error = "failed", error
        return outcome

    def _started(self, k: int) -> None:
        ref, self.slots[k].starting = self.slots[k].starting, None
        if not _answers(ref):
            self.replace(k)  # it died starting

    def _expire(self) -> list[Outcome]:
        """Replace the actors past their deadline: a start, or a call (which is "hung": its answer is not in)."""
        now, outcomes = time.perf_counter(), []
        for k, s in enumerate(self.slots):
            if (s.call is None and s.starting is None) or now < s.deadline:
                continue
            if s.call is not None:
                outcomes.append(self._take(k, "hung"))
            self.replace(k)
        return outcomes

    def replace(self, slot: int, strike: bool = True) -> None:
        """Kill the slot's actor and start another (the spare, if one is kept); a `strike` if the round's work did."""
        import ray

        s = self.slots[slot]
        ray.kill(s.actor, no_restart=True)
        s.actor, self.spare = self.spare or self._launch(), None
        s.starting, s.call, s.item = s.actor.ready.remote(), None, None
        s.deadline = time.perf_counter() + self.startup_timeout_s
        if self.keep_spare:
            self.spare = self._launch()
        self.replaced += 1
        self.strikes += strike

    def close(self, goodbye: Callable[[Any], Any] | None = None) -> None:
        """Kill every actor, the spare too; `goodbye(actor)` first (e.g. `lambda a: a.close.remote()`), all of them
        given `grace_s` in all."""
        import ray

        actors = [s.actor for s in self.slots] + ([self.spare] if self.spare else [])
        if goodbye is not None and actors:
            ray.wait([goodbye(a) for a in actors], num_returns=len(actors), timeout=self.grace_s)
        for actor in actors:
            ray.kill(actor, no_restart=True)
        self.slots, self.spare = [], None


def _answers(ref) -> bool:
    import ray

    try:
        ray.get(ref)
        return True
    except ray.exceptions.RayError:
        return False


def error_line(error: Exception, index: int = 0) -> str:
    """A line of a Ray error's text: the first says what happened; the last (-1) of an actor's failed `__init__`
    is the exception it raised (Ray sends the whole traceback)."""
    text = str(error).strip()
    return text.splitlines()[index] if text else type(error).__name__

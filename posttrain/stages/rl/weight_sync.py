"""The driver's side of RL's weight sync: the transport `rollout.weight_sync` resolves to, set up once, then per
version `publish` (the learner's half, which may overlap the workers' generation) and `deliver` (the engines').

- object store: learner rank 0 puts each bucket into Ray's object store as its own object; every worker fetches
  and loads them one at a time (any node, CPU runs);
- shared memory: learner rank 0 writes a slot of a /dev/shm file the CPU engines on its host point at;
- broadcast: learner rank 0 and every worker form a process group of their own (NCCL on GPUs, else gloo), at
  learner rank 0's node IP (127.0.0.1 when they all share its node); it streams the buckets, in the engines'
  dtype (bf16 for a bf16 vLLM), as OpenRLHF, verl and TRL move weights into vLLM. Under ZeRO-3 every learner
  rank joins each bucket's gather meanwhile.

Boundary: this module only wires a `LearnerGroup` to a `RolloutGroup`. How tensors move is `rollout.weight_sync`
and `rollout.shared_weights`; which transport a recipe gets is `posttrain.rollout_engine.weight_transport`.
"""

from __future__ import annotations

from typing import Callable

import ray

from posttrain.recipe import RolloutSection
from posttrain.rollout_engine import broadcast_backend, weight_transport
from rollout.shared_weights import SHM_DIR

BUCKET_BYTES = 64 << 20  # per object (object store) or per collective (broadcast): whole-bandwidth sized


def open_weight_sync(section: RolloutSection, learners, rollout, say: Callable[[str], None]):
    """The transport for these learners and workers, set up (file created, group joined); `say` gets one line
    naming it (and, where auto fell back from shared memory, why)."""
    learner, workers = learners.devices()[0], rollout.devices()
    transport = weight_transport(section, rollout.engine, learner, workers)
    if transport == "broadcast":
        one_host = {w["node"] for w in workers} == {learner["node"]}
        sync = BroadcastSync(learners, rollout, broadcast_backend(learner, workers), one_host)
    elif transport == "shared_memory":
        try:
            sync = SharedMemorySync(learners, rollout)
        except OSError as error:  # e.g. a small /dev/shm: asked for by name, an error; by auto, said here
            if section.weight_sync == "shared_memory":
                raise
            sync = ObjectStoreSync(learners, rollout, why=f" ({error})")
    else:
        sync = ObjectStoreSync(learners, rollout)
    say(f"weight sync through {sync.describe()}")
    return sync


class ObjectStoreSync:
    def __init__(self, learners, rollout, why: str = ""):
        self.learners, self.rollout, self.why = learners, rollout, why
        self.dtype = rollout.weight_dtype()

    def describe(self) -> str:
        return f"object store ({self.dtype}){self.why}"

    def publish(self, version: int) -> list:
        """Export version's buckets, one object each; returns their ObjectRefs (the driver never fetches them)."""
        return self.learners.export_weight_refs(BUCKET_BYTES, self.dtype)

    def deliver(self, version: int, refs: list) -> None:
        self.rollout.update_weights(version, refs)

    def close(self) -> None:
        pass


class SharedMemorySync:
    def __init__(self, learners, rollout):
        self.learners, self.rollout = learners, rollout
        self.layout = learners.shared_weights_layout(str(SHM_DIR))

    def describe(self) -> str:
        return "shared memory"

    def publish(self, version: int) -> None:
        """Write version's slot (the engines still view the other one)."""
        self.learners.write_shared_weights(self.layout, version)

    def deliver(self, version: int, _published: None) -> None:
        self.rollout.share_weights(version, self.layout)

    def close(self) -> None:
        self.layout.remove()


class BroadcastSync:
    def __init__(self, learners, rollout, backend: str, one_host: bool):
        """`one_host`: every worker runs on learner rank 0's node, so the group meets on loopback (Ray may know
        that node by a routable IP even when started on 127.0.0.1); across nodes, at that node's IP."""
        self.learners, self.rollout, self.backend = learners, rollout, backend
        self.dtype = rollout.weight_dtype()
        self.plan = learners.weight_plan(BUCKET_BYTES, self.dtype)  # the same every version: sent with each
        host, port = learners.broadcast_address()
        host = "127.0.0.1" if one_host else host
        self.address = f"{host}:{port}"
        wait_all(learners.join_weight_broadcast(host, port, len(rollout.workers) + 1, backend),
                 *rollout.join_broadcast_group(host, port, backend))

    def describe(self) -> str:
        return f"broadcast ({self.backend} at {self.address}, {self.dtype})"

    def publish(self, version: int) -> None:
        """Nothing ahead: the send is a collective with the workers, which take it only after their generation,
        and learner rank 0 waiting through a generation would hold ZeRO-3's gathers and run out the group's
        timeout. Both halves run in `deliver`."""

    def deliver(self, version: int, _published: None) -> None:
        wait_all(*self.learners.broadcast_weights(BUCKET_BYTES, self.dtype),
                 *self.rollout.receive_broadcast(version, self.plan))

    def close(self) -> None:
        pass


def wait_all(*refs) -> None:
    """Wait for every ref, raising the first failure as soon as it happens (not once its peers, left waiting in
    the collective, time out)."""
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        ray.get(done)

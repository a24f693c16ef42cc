"""The Ray cluster a recipe runs on: a local loopback cluster by default, or an existing one.

On a CPU box the rollout, reward and learner actors are colocated and take turns (generate, score, train), so
their Ray CPU reservations are shares of the same cores, sized to fit `num_cpus` together; each actor sets its own
torch thread count for the phases where it works alone. A local cluster gets exactly the declared node's CPUs and
GPUs (`cluster.num_cpus`, `cluster.gpus_per_node`); where each actor goes is `posttrain.placement`'s.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from posttrain import actor_logs
from posttrain.recipe import Recipe


def check_fits(recipe: Recipe, source: str = "the recipe") -> None:
    """Fail before starting anything if the actors would not fit the declared cluster: Ray would leave them
    pending forever. A running cluster (`cluster.address`) is checked against its own nodes once joined."""
    from posttrain.placement import make_plan

    if recipe.cluster.address is None:
        make_plan(recipe, source=source)


@contextmanager
def ray_cluster(recipe: Recipe):
    """Start (or join) Ray for the duration of a run; always shut down what we started."""
    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # no "Started a local Ray instance"; what actors log goes to the run directory instead (posttrain.actor_logs)
    quiet = dict(log_to_driver=False, logging_level=logging.WARNING, runtime_env=actor_logs.runtime_env(recipe.run_dir))
    if recipe.cluster.address:
        ray.init(address=recipe.cluster.address, **quiet)
    else:
        # address="local": a cluster of its own, even where `ray start` (or a test's cluster) left one running,
        # which ray.init() would otherwise join and then refuse these sizes for
        ray.init(address="local", num_cpus=recipe.cluster.num_cpus, num_gpus=recipe.cluster.gpus_per_node,
                 include_dashboard=False, _node_ip_address="127.0.0.1",
                 object_store_memory=recipe.cluster.object_store_mb * 1024 * 1024, **quiet)
    previous = _stop_on_sigterm()
    try:
        check_shared_run_dir(recipe.run_dir)
        yield
    finally:
        ray.shutdown()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stop_on_sigterm():
    """SIGTERM (a scheduler's stop, `kill`) stops the driver as Ctrl-C does, so the runner says where the run
    stopped instead of Ray's handler printing a C++ stack dump. Returns the handler it replaced (None: not the
    main thread, where Python cannot set one)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    return signal.signal(signal.SIGTERM, interrupt)


def check_shared_run_dir(run_dir: Path) -> None:
    """On a cluster of several nodes, every node must see the run directory: learners on any node write the
    checkpoints the driver publishes, and each stage reads what the one before wrote. A file the driver writes is
    looked for by a task on each other node; where it is missing the run stops before any actor starts."""
    others = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != ray.get_runtime_context().get_node_id()]
    if not others:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    probe, token = run_dir / f".shared-check-{os.getpid()}", uuid.uuid4().hex
    probe.write_text(token)
    try:
        seen = ray.get([_reads.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                        .remote(str(probe), token) for node in others])
    finally:
        probe.unlink(missing_ok=True)
    unseen = [node for node, ok in zip(others, seen) if not ok]
    if unseen:
        raise RuntimeError(f"{len(unseen)} of {len(others) + 1} nodes cannot see the run directory {run_dir} "
                           f"(nodes {', '.join(n[:12] for n in unseen)}): learners there would write checkpoints "
                           f"the driver never reads. Put runs_dir on a filesystem every node mounts at the same "
                           f"path (NFS, a shared volume), e.g. `runs_dir=/shared/runs`")


@ray.remote(num_cpus=0)
def _reads(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False

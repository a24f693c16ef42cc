"""The Ray cluster a recipe runs on: a local loopback cluster by default, or an existing one.

On a CPU box the rollout, reward and learner actors are colocated and take turns (generate, score, train), so
their Ray CPU reservations are shares of the same cores, sized to fit `num_cpus` together; each actor sets its own
torch thread count for the phases where it works alone.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import ray

from posttrain.recipe import Recipe


def check_fits(recipe: Recipe) -> None:
    """Fail before starting anything if the actors would not fit: Ray would leave them pending forever."""
    c, r, w = recipe.cluster, recipe.rollout, recipe.reward
    # the reward pool keeps one spare worker warm; evaluation has a one-worker pool of its own
    reward_cpus = (w.num_workers + 2) * w.cpus_per_worker
    wanted = r.num_workers * r.cpus_per_worker + reward_cpus + c.num_learners * c.cpus_per_learner
    if recipe.cluster.address is None and wanted > c.num_cpus + 1e-9:
        raise ValueError(f"the actors ask for {wanted:g} CPUs (rollout {r.num_workers} x {r.cpus_per_worker}, "
                         f"reward {w.num_workers} + 2 x {w.cpus_per_worker}, learner {c.num_learners} x "
                         f"{c.cpus_per_learner}) but cluster.num_cpus is {c.num_cpus}; lower the shares "
                         f"(colocated actors take turns, so shares of the same cores are fine)")


@contextmanager
def ray_cluster(recipe: Recipe):
    """Start (or join) Ray for the duration of a run; always shut down what we started."""
    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if recipe.cluster.address:
        ray.init(address=recipe.cluster.address, log_to_driver=False)
    else:
        ray.init(num_cpus=recipe.cluster.num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 object_store_memory=recipe.cluster.object_store_mb * 1024 * 1024, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()

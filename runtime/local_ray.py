"""A Ray instance on this machine only: the start every single-machine entry point shares (tests, benchmarks,
`reward check`, the learner and reward pools outside a run). A run's own cluster is `posttrain.cluster`'s.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def local_ray(num_cpus: int, object_store_mb: int | None = None, **kwargs) -> Iterator[None]:
    """Ray on 127.0.0.1 with no dashboard and no usage report, always shut down. `kwargs` go to `ray.init`."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if object_store_mb is not None:
        kwargs["object_store_memory"] = object_store_mb * 2**20
    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", **kwargs)
    try:
        yield
    finally:
        ray.shutdown()

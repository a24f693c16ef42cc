"""A reward whose model components are served apart: the split of one weighted reward, and the merge back.

A recipe's weighted components are split in two: the rule rewards (math, format, ...) stay one weighted
combination on the reward worker pool (`rewards.pool`), and each component with `serve` gets its own
`rewards.model_server.ModelReplicas`. `ServedRewards.score` runs every server in a thread of its own while the
pool scores in the calling thread, so a slow model never holds up the rule checks, then merges per sample with
`rewards.combine`'s own running sum (`Row`): total = the pool's weighted total + sum(weight x served score), each
served score logged as its own component, a failed or None one adding nothing. A failure keeps every score that
did come in; its error (the first, every message joined, each naming its component) and `on_error` apply as for
any reward. The batch's metrics are the pool's plus each server's `reward_server/<name>/...`. This module knows
nothing about recipes.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rewards.combine import Row
from rewards.model_server import ModelReplicas, ServeConfig
from rewards.pool import PoolConfig, RewardPool, ScoredBatch, finish_batch
from rewards.registry import resolve
from rewards.result import RewardResult
from rewards.sample import Sample


@dataclass
class ServedComponent:
    spec: str
    weight: float
    options: dict
    serve: ServeConfig


class ServedRewards:
    """`score(samples) -> ScoredBatch`, as `RewardPool`; `rule` is the `{spec: weight}` mapping of the
    components scored in the pool (None or empty: no pool), `served` the components with servers."""

    def __init__(self, rule: dict | None, served: list[ServedComponent], config: PoolConfig | None = None,
                 seed: int = 0):
        self.config = config or PoolConfig()
        self.pool = self.servers = None
        try:
            self.pool = RewardPool(rule, {}, self.config) if rule else None  # a served timeout_s None: the pool's
            self.servers = [ModelReplicas(c.spec, c.options, c.serve, seed, self.config.timeout_s) for c in served]
        except BaseException:
            self.close()
            raise
        self.parts = [(name, c.weight, server) for name, c, server in
                      zip(_served_names(rule or {}, self.servers), served, self.servers)]

    def score(self, samples: list[Sample]) -> ScoredBatch:
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, len(self.parts)), thread_name_prefix="reward-server") as threads:
            futures = [threads.submit(server.score, samples) for _, _, server in self.parts]
            rule, metrics = self.pool.results(samples) if self.pool else ([None] * len(samples), {})
            served = [future.result() for future in futures]
        for _, server_metrics in served:
            metrics.update(server_metrics)
        parts = [(name, weight, results) for (name, weight, _), (results, _) in zip(self.parts, served)]
        merged = [merge(rule[i], [(name, weight, results[i]) for name, weight, results in parts])
                  for i in range(len(samples))]
        return finish_batch(merged, self.config.on_error, metrics, start)

    def close(self) -> None:
        for server in self.servers or []:
            server.close()
        if self.pool is not None:
            self.pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def merge(rule: RewardResult | None, served: list[tuple[str, float, RewardResult]]) -> RewardResult:
    """One sample's result: its pool result (None: no rule components) plus each served component's.

    >>> rule = RewardResult(1.0, {"math": 1.0})
    >>> merge(rule, [("reward_model", 0.5, RewardResult(0.25))]).total
    1.125
    >>> failed = merge(rule, [("reward_model", 0.5, RewardResult.failed("timeout", "slow"))])
    >>> failed.error, failed.total, failed.components, failed.component_errors
    ('timeout', 1.0, {'math': 1.0}, {'reward_model': "component 'reward_model' (served): slow"})
    """
    row = Row()
    if rule is not None:
        row.include(rule)
    for name, weight, result in served:
        row.seconds += result.seconds
        if result.error is not None:
            row.fail(name, result.error, f"component {name!r} (served): {result.message}")
        elif result.total is not None:
            row.add(name, weight, result.total, result.components)
    return row.result()


def _served_names(rule: dict, servers: list[ModelReplicas]) -> list[str]:
    """Each server's component name (its reward's name), kept apart from the rule components' names the way
    `rewards.combine` keeps two components with one name apart (a trailing "_")."""
    taken = {_name_of(spec) for spec in rule}
    names = []
    for server in servers:
        name = server.name
        while name in taken:
            name += "_"
        taken.add(name)
        names.append(name)
    return names


def _name_of(spec) -> str:
    fn = resolve(spec) if isinstance(spec, str) else spec
    return getattr(fn, "__reward_name__", None) or getattr(fn, "__name__", None) or type(fn).__name__

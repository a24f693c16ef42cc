"""A reward whose model components are served apart: the split of one weighted reward, and the merge back.

A recipe's weighted components are split in two: the rule rewards (math, format, ...) stay one weighted
combination on the reward worker pool (`rewards.pool`), and each component with `serve` gets its own
`rewards.model_server.ModelReplicas`. `ServedRewards.score` runs every server in a thread of its own while the
pool scores in the calling thread, so a slow model never holds up the rule checks, then merges per sample
exactly as `rewards.combine` sums: total = the pool's weighted total + sum(weight x served score), each served
score logged as its own component (a dict-valued one also as `name/key`), a served None adding nothing, and a
sample that no component applies to not applicable (skipped). A failure keeps every score that did come in:
the rule components of a sample whose model failed are still in its components and its total (the failed model
adds nothing, as a failed component does in `rewards.combine`), while its error (the first, with every message
joined, each naming its component, also per component in `component_errors`) and `on_error` apply as for any
reward. The batch's
metrics are the pool's plus each server's `reward_server/<name>/...`. This module knows nothing about recipes.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

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

    def __init__(self, rule: dict | None, served: list[ServedComponent], config: PoolConfig | None = None):
        self.config = config or PoolConfig()
        self.pool = self.servers = None
        try:
            self.pool = RewardPool(rule, {}, self.config) if rule else None
            self.servers = [ModelReplicas(c.spec, c.options, c.serve) for c in served]
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
    total, applicable, components, errors = 0.0, False, {}, []
    seconds = rule.seconds if rule is not None else 0.0
    component_errors = dict(rule.component_errors) if rule is not None else {}
    if rule is not None:
        components.update(rule.components)
        if rule.error is not None:
            errors.append((rule.error, rule.message))
        if rule.total is not None:  # with an error: the credit of the rule components that did score
            total, applicable = rule.total, True
    for name, weight, result in served:
        seconds += result.seconds
        if result.error is not None:
            errors.append((result.error, f"component {name!r} (served): {result.message}"))
            component_errors[name] = errors[-1][1]
        elif result.total is not None:
            applicable = True
            total += weight * result.total
            components[name] = result.total
            components.update({f"{name}/{k}": v for k, v in result.components.items()})
    total = total if applicable else None
    if errors:
        return RewardResult(total, components, errors[0][0], "; ".join(m or "" for _, m in errors), seconds,
                            component_errors=component_errors)
    return RewardResult(total, components, seconds=seconds, skipped=not applicable)


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

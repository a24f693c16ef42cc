"""Where every actor of a recipe runs: a plan (pure, testable without Ray) and the placement groups holding it.

`make_plan(recipe, nodes)` lays the learner ranks and rollout workers out as placement-group bundles on the
nodes, first fit in order, learners first so that a data-parallel group (NCCL) stays on as few nodes as it can:
- disaggregated: one bundle per actor, rollout GPUs apart from learner GPUs;
- colocated: one bundle per learner GPU, shared by learner rank i and rollout worker i with fractional GPUs
  (the engine sleeps while the learners train: the hybrid-engine layout of verl and OpenRLHF).
Reward workers reserve CPUs only and are not pinned (Ray puts them where CPUs are free); the plan counts them
against what the bundles leave, and so the replicas of reward-model servers (`serve:` components of
`reward.components`, with their CPUs and GPUs). A layout that cannot work, or does not fit, raises
`PlacementError` naming the keys to change.

`reserve(plan)` turns the plan into one STRICT_PACK placement group per node, each bundle pinned to its node,
and gives each actor Ray options that reserve its own CPUs and GPUs inside its bundle: in recent Ray an actor
that reserves no GPU sees all of them, so nothing here is left to defaults. Knows nothing of what actors do.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from posttrain.recipe import Recipe
from rollout.engines import CPU_ENGINES

EVAL_AND_SPARE_REWARD_WORKERS = 2  # the reward pool keeps one spare warm; evaluation has a one-worker pool


class PlacementError(ValueError):
    pass


@dataclass(frozen=True)
class NodeShape:
    name: str  # "node0" for a declared node, the node's IP for a running cluster's
    cpus: float
    gpus: float
    ray_resource: str | None = None  # Ray's "node:<ip>" resource: pins bundles to this node


@dataclass(frozen=True)
class Bundle:
    node: int  # index into Plan.nodes
    index: int  # position in that node's placement group
    cpus: float
    gpus: int  # whole GPUs; fractional shares live in the slots
    devices: tuple[int, ...]  # the plan's GPU numbers on the node (Ray picks which physical GPU backs each)


@dataclass(frozen=True)
class Slot:
    role: str  # "learner" | "rollout" | "reward" | "reward_server"
    rank: int
    cpus: float
    gpus: float
    bundle: Bundle | None = None  # None: not pinned (reward workers)


@dataclass
class Plan:
    placement: str
    nodes: list[NodeShape]
    bundles: list[Bundle] = field(default_factory=list)
    slots: list[Slot] = field(default_factory=list)

    def of(self, role: str) -> list[Slot]:
        return [s for s in self.slots if s.role == role]


# ---------------------------------------------------------------------------------------------- the cluster
def declared_nodes(recipe: Recipe) -> list[NodeShape]:
    c = recipe.cluster
    return [NodeShape(f"node{i}", float(c.num_cpus), float(c.gpus_per_node)) for i in range(c.nodes)]


def live_nodes() -> list[NodeShape]:
    """The alive nodes of the Ray cluster this process is connected to, with their total resources."""
    import ray

    alive = sorted((n for n in ray.nodes() if n.get("Alive")), key=lambda n: n["NodeManagerAddress"])
    return [NodeShape(n["NodeManagerAddress"], n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0),
                      f"node:{n['NodeManagerAddress']}") for n in alive]


def describe(nodes: list[NodeShape]) -> str:
    shapes = {(n.gpus, n.cpus) for n in nodes}
    if len(shapes) == 1:
        gpus, cpus = shapes.pop()
        return f"{len(nodes)} node{'s' * (len(nodes) > 1)} x ({gpus:g} GPUs, {cpus:g} CPUs)"
    return ", ".join(f"{n.name} ({n.gpus:g} GPUs, {n.cpus:g} CPUs)" for n in nodes)


# ---------------------------------------------------------------------------------------------- the plan
def make_plan(recipe: Recipe, nodes: list[NodeShape] | None = None, source: str = "the recipe") -> Plan:
    """Every learner rank, rollout worker and reward worker with its node, bundle, GPUs and CPUs."""
    nodes = declared_nodes(recipe) if nodes is None else nodes
    problems = layout_problems(recipe)
    if problems:
        raise PlacementError(f"{source}: cannot place the actors:\n  " + "\n  ".join(problems))
    plan = Plan(recipe.cluster.placement, nodes)
    unplaced = _place_bundles(plan, _demands(recipe))
    unplaced += _place_rewards(plan, recipe)
    if unplaced:
        raise PlacementError(_refusal(recipe, plan, unplaced, source))
    return plan


def layout_problems(recipe: Recipe) -> list[str]:
    """What makes the layout impossible whatever the cluster's size, each naming the keys to change."""
    c, r = recipe.cluster, recipe.rollout
    problems = []
    if c.nodes > 1 and c.address is None:
        problems.append(f"cluster.nodes is {c.nodes} but cluster.address is not set: start Ray on every node "
                        f"(`ray start --head`, then `ray start --address=...`) and set cluster.address")
    if r.engine in CPU_ENGINES and r.gpus_per_worker > 0:
        problems.append(f"rollout.engine {r.engine!r} generates on the CPU (rollout/hf_engine.py never moves its "
                        "model to a GPU): set rollout.gpus_per_worker: 0, or rollout.engine: vllm")
    if c.placement == "disaggregated":
        if c.gpus_per_learner not in (0, 1):
            problems.append(f"cluster.gpus_per_learner is {c.gpus_per_learner:g}: a fraction shares a GPU, which "
                            f"is cluster.placement: colocated; disaggregated learners take 1 GPU (or 0: CPU)")
        if r.gpus_per_worker != int(r.gpus_per_worker):
            problems.append(f"rollout.gpus_per_worker is {r.gpus_per_worker:g}: a fraction shares a GPU, which is "
                            f"cluster.placement: colocated; disaggregated engines take whole GPUs (or 0: CPU)")
        return problems
    if not (0 < c.gpus_per_learner < 1 and 0 < r.gpus_per_worker < 1
            and c.gpus_per_learner + r.gpus_per_worker <= 1 + 1e-9):
        problems.append(f"colocated placement shares each GPU between a learner rank and an engine: set "
                        f"cluster.gpus_per_learner and rollout.gpus_per_worker to fractions summing to at most 1 "
                        f"(e.g. 0.5 and 0.5); they are {c.gpus_per_learner:g} and {r.gpus_per_worker:g}")
    if r.num_workers != c.num_learners:
        problems.append(f"colocated placement puts one engine beside each learner rank: rollout.num_workers "
                        f"({r.num_workers}) must equal cluster.num_learners ({c.num_learners})")
    memory = r.engine_options.get("gpu_memory_utilization")
    if isinstance(memory, (int, float)) and memory > r.gpus_per_worker + 1e-9:
        problems.append(f"rollout.engine_options.gpu_memory_utilization ({memory:g}) is more than the engine's "
                        f"share of its GPU (rollout.gpus_per_worker {r.gpus_per_worker:g}): the learner beside it "
                        f"would run out of memory; lower it")
    return problems


@dataclass
class _Demand:
    """One bundle to place and the actors that share it."""
    cpus: float
    gpus: int
    slots: list[tuple[str, int, float, float]]  # (role, rank, cpus, gpus)


def _demands(recipe: Recipe) -> list[_Demand]:
    c, r = recipe.cluster, recipe.rollout
    learner = [("learner", i, c.cpus_per_learner, c.gpus_per_learner) for i in range(c.num_learners)]
    rollout = [("rollout", i, r.cpus_per_worker, r.gpus_per_worker) for i in range(r.num_workers)]
    if c.placement == "colocated":
        return [_Demand(lrn[2] + rol[2], 1, [lrn, rol]) for lrn, rol in zip(learner, rollout)]
    return [_Demand(slot[2], int(slot[3]), [slot]) for slot in learner + rollout]


def _place_bundles(plan: Plan, demands: list[_Demand]) -> list[_Demand]:
    """First fit, in order; returns what fits nowhere."""
    free = [[n.cpus, n.gpus] for n in plan.nodes]
    count = [0] * len(plan.nodes)
    unplaced = []
    for demand in demands:
        node = next((i for i, (cpus, gpus) in enumerate(free)
                     if cpus + 1e-9 >= demand.cpus and gpus + 1e-9 >= demand.gpus), None)
        if node is None:
            unplaced.append(demand)
            continue
        first = int(round(plan.nodes[node].gpus - free[node][1]))
        bundle = Bundle(node, count[node], demand.cpus, demand.gpus, tuple(range(first, first + demand.gpus)))
        free[node][0] -= demand.cpus
        free[node][1] -= demand.gpus
        count[node] += 1
        plan.bundles.append(bundle)
        plan.slots += [Slot(role, rank, cpus, gpus, bundle) for role, rank, cpus, gpus in demand.slots]
    return unplaced


def _place_rewards(plan: Plan, recipe: Recipe) -> list[_Demand]:
    """Reward workers and reward-server replicas fit on whatever CPUs (and GPUs) the bundles leave (counted per
    node: an actor lives on one node)."""
    w = recipe.reward
    free = [[n.cpus - sum(b.cpus for b in plan.bundles if b.node == i),
             n.gpus - sum(b.gpus for b in plan.bundles if b.node == i)] for i, n in enumerate(plan.nodes)]
    actors = [("reward", rank, w.cpus_per_worker, 0.0) for rank in range(w.num_workers + EVAL_AND_SPARE_REWARD_WORKERS)]
    actors += [("reward_server", rank, cpus, gpus) for rank, (cpus, gpus) in enumerate(served_replicas(recipe))]
    actors += [("teacher", rank, cpus, gpus) for rank, (cpus, gpus) in enumerate(teacher_replicas(recipe))]
    unplaced = []
    for role, rank, cpus, gpus in actors:
        node = next((i for i, (c, g) in enumerate(free) if c + 1e-9 >= cpus and g + 1e-9 >= gpus), None)
        if node is None:
            unplaced.append(_Demand(cpus, gpus, [(role, rank, cpus, gpus)]))
            continue
        free[node][0] -= cpus
        free[node][1] -= gpus
        plan.slots.append(Slot(role, rank, cpus, gpus))
    return unplaced


def teacher_replicas(recipe: Recipe) -> list[tuple[float, float]]:
    """(CPUs, GPUs) of each distillation teacher replica, of the distill stage asking most (stages run in turn)."""
    stages = [[(t.cpus, t.gpus) for t in stage.teachers for _ in range(t.replicas)]
              for stage in recipe.stages if getattr(stage, "teachers", None)]
    return max(stages, key=lambda s: (sum(g for _, g in s), sum(c for c, _ in s)), default=[])


def served_replicas(recipe: Recipe) -> list[tuple[float, float]]:
    """(CPUs, GPUs) of each reward-server replica the training reward starts (`serve:` components)."""
    return [(c.serve.cpus, c.serve.gpus) for c in recipe.reward.components if c.serve is not None
            for _ in range(c.serve.replicas)]


def _refusal(recipe: Recipe, plan: Plan, unplaced: list[_Demand], source: str) -> str:
    c, r, w = recipe.cluster, recipe.rollout, recipe.reward
    served, teachers = served_replicas(recipe), teacher_replicas(recipe)
    gpus = sum(d.gpus for d in _demands(recipe)) + sum(g for _, g in served + teachers)
    cpus = sum(d.cpus for d in _demands(recipe)) + (w.num_workers + EVAL_AND_SPARE_REWARD_WORKERS) * w.cpus_per_worker \
        + sum(c for c, _ in served + teachers)
    left = sorted({f"{role} {rank}" for d in unplaced for role, rank, *_ in d.slots},
                  key=lambda s: (s.split()[0], int(s.split()[1])))
    lines = [f"{source}: the actors do not fit the cluster ({describe(plan.nodes)}); left over: {', '.join(left)}",
             f"they ask for {gpus:g} GPUs and {cpus:g} CPUs: learners cluster.num_learners {c.num_learners} x "
             f"(cluster.gpus_per_learner {c.gpus_per_learner:g}, cluster.cpus_per_learner {c.cpus_per_learner:g}), "
             f"rollout rollout.num_workers {r.num_workers} x (rollout.gpus_per_worker {r.gpus_per_worker:g}, "
             f"rollout.cpus_per_worker {r.cpus_per_worker:g}), reward (reward.num_workers {w.num_workers} + "
             f"{EVAL_AND_SPARE_REWARD_WORKERS}) x reward.cpus_per_worker {w.cpus_per_worker:g}"
             + (f", reward servers {len(served)} replicas (reward.components[].serve) with "
                f"{sum(c for c, _ in served):g} CPUs and {sum(g for _, g in served):g} GPUs" if served else "")
             + (f", teachers {len(teachers)} replicas (stages[].teachers) with {sum(c for c, _ in teachers):g} CPUs "
                f"and {sum(g for _, g in teachers):g} GPUs" if teachers else "")]
    fixes = []
    largest = max(unplaced, key=lambda d: (d.gpus, d.cpus))
    node_gpus, node_cpus = max(n.gpus for n in plan.nodes), max(n.cpus for n in plan.nodes)
    if largest.gpus > node_gpus or largest.cpus > node_cpus + 1e-9:
        role = largest.slots[0][0]
        keys = {"learner": "cluster.gpus_per_learner / cluster.cpus_per_learner",
                "rollout": "rollout.gpus_per_worker / rollout.cpus_per_worker",
                "reward": "reward.cpus_per_worker",
                "reward_server": "reward.components[].serve.gpus / serve.cpus",
                "teacher": "stages[].teachers[].gpus / teachers[].cpus"}[role]
        fixes.append(f"one {role} asks for more than any node has ({largest.gpus} GPUs, {largest.cpus:g} CPUs): "
                     f"lower {keys}, or raise cluster.gpus_per_node / cluster.num_cpus")
    elif c.address is None or plan.nodes == declared_nodes(recipe):
        needed = _nodes_needed(recipe)
        if needed is not None and needed > c.nodes:
            fixes.append(f"set cluster.nodes: {needed} (the fewest nodes of {c.gpus_per_node} GPUs and {c.num_cpus} "
                         f"CPUs that hold them), with cluster.address pointing at that cluster")
    fixes.append("or lower cluster.num_learners / rollout.num_workers / reward.num_workers / serve.replicas or their "
                 "GPU and CPU shares" + ("; cluster.placement: colocated shares each learner's GPU with one engine"
                             if c.placement == "disaggregated" and gpus else ""))
    return "\n  ".join(lines + ["fix: " + "; ".join(fixes)])


def _nodes_needed(recipe: Recipe, limit: int = 256) -> int | None:
    """The fewest declared-shape nodes that hold the plan (None if even `limit` do not)."""
    c = recipe.cluster
    for count in range(c.nodes + 1, limit + 1):
        nodes = [NodeShape(f"node{i}", float(c.num_cpus), float(c.gpus_per_node)) for i in range(count)]
        plan = Plan(c.placement, nodes)
        if not _place_bundles(plan, _demands(recipe)) and not _place_rewards(plan, recipe):
            return count
    return None


# ---------------------------------------------------------------------------------------------- Ray
class Placement:
    """The run's placement groups and, per role, the Ray options that put each actor in its bundle."""

    def __init__(self, plan: Plan, groups: dict[int, object]):
        self.plan, self.groups = plan, groups

    def actor_options(self, role: str) -> list[dict]:
        """One dict per actor of `role` (rank order): num_cpus, num_gpus and, if pinned, its bundle."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        options = []
        for slot in self.plan.of(role):
            option = {"num_cpus": slot.cpus, "num_gpus": slot.gpus}
            if slot.bundle is not None:
                option["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    self.groups[slot.bundle.node], placement_group_bundle_index=slot.bundle.index)
            options.append(option)
        return options

    def remove(self) -> None:
        from ray.util import remove_placement_group

        for group in self.groups.values():
            remove_placement_group(group)
        self.groups = {}


def bundle_specs(plan: Plan, node: int) -> list[dict[str, float]]:
    """Ray bundle dicts of one node, in bundle order."""
    pin = plan.nodes[node].ray_resource
    specs = []
    for b in (b for b in plan.bundles if b.node == node):
        spec = {"CPU": b.cpus, **({"GPU": float(b.gpus)} if b.gpus else {})}
        if pin:
            spec[pin] = 0.001  # a sliver of the node's own resource keeps the bundle on that node
        specs.append(spec)
    return specs


def reserve(plan: Plan, timeout_s: float = 300.0) -> Placement:
    """Create the placement groups and wait until the cluster has granted every bundle."""
    import ray
    from ray.util import placement_group

    groups = {node: placement_group(bundle_specs(plan, node), strategy="STRICT_PACK")
              for node in sorted({b.node for b in plan.bundles})}
    placement = Placement(plan, groups)
    try:
        ray.get([g.ready() for g in groups.values()], timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        placement.remove()
        raise PlacementError(f"the cluster did not grant the placement's {len(plan.bundles)} bundles within "
                             f"cluster.placement_timeout_s ({timeout_s:g} s): other jobs may hold the resources "
                             f"(`ray status` shows what is free); `posttrain plan` shows what this recipe needs")
    return placement


@contextmanager
def reserved(recipe: Recipe, source: str = "the recipe") -> Iterator[Placement]:
    """The recipe's placement on the Ray cluster this process is connected to, released at exit."""
    placement = reserve(make_plan(recipe, live_nodes(), source), recipe.cluster.placement_timeout_s)
    try:
        yield placement
    finally:
        placement.remove()


def gpu_label(slot: Slot) -> str:
    if not slot.gpus:
        return "-"
    if slot.bundle is not None and slot.gpus < 1:
        return f"{slot.gpus:g} (shared)"
    return f"{slot.gpus:g}"


def device_label(slot: Slot) -> str:
    if slot.bundle is None or not slot.bundle.devices:
        return "-"
    devices = slot.bundle.devices
    return str(devices[0]) if len(devices) == 1 else f"{devices[0]}-{devices[-1]}"

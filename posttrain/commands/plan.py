"""`posttrain plan RECIPE [overrides]`: which actor gets which node, GPUs and CPUs, without starting any actor.

The cluster is the one the recipe declares (`cluster.nodes`, `cluster.num_cpus`, `cluster.gpus_per_node`) or,
when `cluster.address` names a running Ray cluster that answers, that cluster's nodes (`--declared` skips the
look-up). A plan that cannot be
placed is refused (exit 2) with the keys to change. The rollout engine is not imported here: the plan is often
made on another machine than the one that runs it (`posttrain validate` checks the engine).
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table


def register(subparsers) -> None:
    plan = subparsers.add_parser("plan", help="show where each actor of a recipe would run (starts nothing)")
    plan.add_argument("recipe")
    plan.add_argument("overrides", nargs="*", help="key.sub=value")
    plan.add_argument("--declared", action="store_true",
                      help="plan on the cluster the recipe declares even if one runs at cluster.address")
    plan.set_defaults(run=plan_command)


def plan_command(args: argparse.Namespace) -> int:
    from posttrain.commands.recipes import resolve
    from posttrain.placement import PlacementError, describe, make_plan
    from posttrain.recipe_checks import load_recipe

    path = resolve(args.recipe)
    recipe = load_recipe(path, args.overrides, check_environment=False)
    console = Console()
    nodes, origin = cluster_nodes(recipe, console, args.declared)
    try:
        plan = make_plan(recipe, nodes, source=str(path))
    except PlacementError as error:
        if "running" in origin or "connected" in origin:
            raise PlacementError(f"{error}\n  (planned on {origin[:-1]}; `--declared` plans on the cluster the "
                                 f"recipe declares)") from None
        raise
    console.print(plan_table(plan, f"{recipe.name}: {plan.placement} placement on {origin} {describe(plan.nodes)}"))
    console.print("[dim]GPU numbers are the plan's within each node; Ray picks the physical GPU behind each bundle "
                  "and sets the actor's CUDA_VISIBLE_DEVICES to it (cuda:0 inside the actor).[/]")
    return 0


def cluster_nodes(recipe, console: Console, declared: bool = False):
    """The running cluster's nodes when `cluster.address` answers (`auto`: any Ray this machine runs, as Ray
    resolves it), else the declared ones."""
    from posttrain.placement import declared_nodes

    import ray

    from posttrain.placement import live_nodes

    address = recipe.cluster.address
    if address is None or declared:
        return declared_nodes(recipe), f"the declared{' local' if address is None else ''} cluster:"
    if ray.is_initialized():  # already connected (a notebook, a test): that is the cluster
        return live_nodes(), "the connected cluster:"
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError) as error:
        console.print(f"[yellow]no running Ray cluster at cluster.address={address!r} ({error}); planning on the "
                      f"declared cluster instead[/]")
        return declared_nodes(recipe), "the declared cluster:"
    try:
        return live_nodes(), f"the running cluster at {address}:"
    finally:
        ray.shutdown()  # disconnects this driver; the cluster keeps running


def plan_table(plan, title: str) -> Table:
    from posttrain.placement import device_label, gpu_label

    table = Table(title=title)
    for column in ("actor", "node", "bundle", "GPUs", "GPU numbers", "CPUs"):
        table.add_column(column, justify="right" if column in ("GPUs", "CPUs") else "left")
    for slot in plan.slots:
        node = plan.nodes[slot.bundle.node].name if slot.bundle else "any (not pinned)"
        bundle = str(slot.bundle.index) if slot.bundle else "-"
        table.add_row(f"{slot.role} {slot.rank}", node, bundle, gpu_label(slot), device_label(slot), f"{slot.cpus:g}")
    return table

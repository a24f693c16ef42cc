"""Imbalance across data-parallel ranks of Keye-VL-8B pre-training batches: contiguous split vs FLOPs-balanced.

The batches are drawn from a native-resolution mixture like stage 2's (the shapes below, not real images): text
rows, single images at their own resolution (14 px patches), and videos of several frames. Each row's cost is
`CostModel.row_flops` for the public Keye-VL-8B config; imbalance is the slowest rank's FLOPs over the mean
rank's, i.e. the step time the ranks' all-reduce waits for, relative to perfect balance.

    .venv/bin/python -m bench.rank_balance [--steps 200 --rows-per-rank 8]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from rich.console import Console
from rich.table import Table

from keye_vl.presets import preset_config
from posttrain.learners.rank_balance import CostModel, balanced_order, imbalance

PATCH, MERGE = 14, 2


def sample_row(rng: np.random.Generator) -> tuple[int, list[int]]:
    """(text tokens, patches per vision item) of one row: 30% text, 55% one image, 15% video."""
    kind = rng.choice(3, p=[0.30, 0.55, 0.15])
    text = int(rng.integers(64, 1024))
    if kind == 0:
        return int(rng.integers(256, 4096)), []
    if kind == 1:
        h, w = (int(rng.integers(224, 1792)) // (PATCH * MERGE) * MERGE for _ in range(2))
        return text + h * w // MERGE**2, [h * w]
    frames, side = int(rng.integers(4, 33)) // 2 * 2, 448 // PATCH  # two frames per temporal patch
    patches = frames // 2 * side * side
    return text + patches // MERGE**2, [patches]


def measure(cost: CostModel, world: int, rows_per_rank: int, steps: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    before, after = [], []
    for _ in range(steps):
        costs = [cost.row_flops(*sample_row(rng)) for _ in range(world * rows_per_rank)]
        order = balanced_order(costs, [[i] for i in range(len(costs))], world)
        before.append(imbalance(costs, list(range(len(costs))), world))
        after.append(min(before[-1], imbalance(costs, order, world)))
    return float(np.mean(before)), float(np.mean(after))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rows-per-rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cost = CostModel.from_config(preset_config("keye-vl-8b"))
    table = Table(title=f"Keye-VL-8B: slowest rank / mean rank FLOPs, {args.rows_per_rank} rows per rank, "
                        f"mean of {args.steps} steps")
    for column in ("ranks", "contiguous", "FLOPs-balanced", "step time saved"):
        table.add_column(column)
    results = {}
    for world in (2, 4, 8, 16):
        before, after = measure(cost, world, args.rows_per_rank, args.steps, args.seed)
        results[world] = {"before": round(before, 4), "after": round(after, 4)}
        table.add_row(str(world), f"{before:.3f}", f"{after:.3f}", f"{1 - after / before:.1%}")
    Console().print(table)
    print(json.dumps({"bench": "rank_balance", "rows_per_rank": args.rows_per_rank, "imbalance": results}))


if __name__ == "__main__":
    main()

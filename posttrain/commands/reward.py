"""`posttrain reward check|list`: score JSONL rows with a reward, the way a user debugs it before a long run.

`check` prints one JSON line per row (total, components, error, message) and a summary on stderr; it exits
1 when any row failed. With ``--workers 0`` (default) one `RewardWorker` scores here, without Ray; with
``--workers K`` the Ray worker pool scores exactly as training does. Either way the reward runs in a child
process that is killed at the per-sample deadline (and at its memory and output bounds) and replaced, so
`check` never hangs: a row that stalls is marked ``timeout`` and the rows after it are scored. What the reward
prints goes to stderr, control characters written out, never into the JSON lines; so does everything Ray prints
while the pool runs (its "(raylet) A worker died ..." lines go to the driver's stdout).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("reward", help="check reward functions on data before training")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    check = actions.add_parser("check", help="score JSONL rows and print one JSON line per row")
    check.add_argument("--reward", action="append", required=True, metavar="SPEC[=WEIGHT]",
                       help="registered name, module.path:func or path/to/file.py:func; repeat (with =WEIGHT) "
                            "for a weighted combination")
    check.add_argument("--data", type=Path, required=True, help="JSONL rows with prompt, completion, ground truth")
    check.add_argument("--options", default="{}", help="JSON object of options for a single reward "
                                                       "(e.g. '{\"max_length\": 512}')")
    check.add_argument("--workers", type=int, default=0, help="0: in this process; K: a K-worker Ray pool")
    check.add_argument("--deadline", type=seconds, default=10.0, help="seconds per sample (default 10); a row "
                                                                      "past it is marked timeout")
    check.add_argument("--memory-mb", type=int, default=4096, help="memory of the reward's process before it is "
                                                                   "killed and the row marked memory")
    check.add_argument("--output-mb", type=int, default=16, help="what one row may print before the reward's "
                                                                 "process is killed and the row marked output")
    check.add_argument("--on-error", default="zero", choices=["zero", "skip", "fail"])
    check.set_defaults(run=run_check)

    listing = actions.add_parser("list", help="print the registered reward names")
    listing.set_defaults(run=run_list)


def seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0 (``nan`` would never expire, ``-1`` always)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the deadline must be a finite number of seconds > 0, e.g. 10")
    return value


def parse_reward_args(values: list[str]) -> str | dict[str, float]:
    """`["math"]` -> "math"; `["math=1", "format=0.5"]` -> {"math": 1.0, "format": 0.5}."""
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    weights = {}
    for value in values:
        spec, _, weight = value.rpartition("=") if "=" in value else (value, "", "1")
        try:
            weights[spec] = float(weight)
        except ValueError:
            raise ValueError(f"--reward {value!r}: the weight after '=' must be a number") from None
    return weights


def read_samples(path: Path) -> list:
    """One `Sample` per non-blank line; a line that is not a JSON object with prompt and completion is an error
    naming `path:line`."""
    from rewards.sample import Sample

    if not path.exists():
        raise FileNotFoundError(f"--data {path} does not exist")
    samples = []
    for number, line in enumerate(path.read_text().split("\n"), 1):  # not splitlines: U+2028/U+0085 in strings
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as error:
            raise ValueError(f"{path}:{number} is not JSON ({error})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: a row must be a JSON object with 'prompt' and 'completion', got "
                             f"{type(row).__name__}")
        try:
            samples.append(Sample.from_row(row))
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise ValueError(f"{path}:{number}: {error}") from None
    return samples


def run_check(args: argparse.Namespace) -> int:
    from posttrain.judge_engine import engine_backed
    from rewards.registry import validate_reward
    from rewards.result import summarize

    options = json.loads(args.options)
    spec = engine_backed(parse_reward_args(args.reward), options)  # a judge with a `model`: its rollout engine
    samples = read_samples(args.data)
    validate_reward(spec, **options)  # a broken spec fails here, before any process starts
    results = _score_pool(spec, options, samples, args) if args.workers else _score_here(spec, options, samples,
                                                                                         args)
    for i, result in enumerate(results):
        print(json.dumps({"row": i, "total": result.total, "components": result.components,
                          "error": result.error, "message": result.message, "skipped": result.skipped}))
    metrics = summarize(results)
    print(json.dumps({k: v for k, v in metrics.items() if not k.startswith("reward/components/")}), file=sys.stderr)
    return 1 if metrics["reward/errors"] else 0


def _score_here(spec, options: dict, samples: list, args: argparse.Namespace) -> list:
    from rewards.pool import apply_policy
    from rewards.worker import RewardWorker

    worker = RewardWorker(spec, options, memory_mb=args.memory_mb, output_mb=args.output_mb)
    try:
        results = [worker.score([sample], args.deadline).results[0] for sample in samples]
    finally:
        worker.close()
    # `fail` leaves failed totals as scored (a combination's: its other components' credit): check reports them
    if args.on_error != "fail":
        apply_policy(results, args.on_error)
    return results


def _score_pool(spec, options: dict, samples: list, args: argparse.Namespace) -> list:
    from rewards.pool import PoolConfig, RewardFailed, RewardPool
    from runtime.local_ray import local_ray

    config = PoolConfig(num_workers=args.workers, timeout_s=args.deadline, on_error=args.on_error,
                        cpus_per_worker=min(0.5, 1.0 / args.workers), memory_mb=args.memory_mb,
                        output_mb=args.output_mb)
    # Ray relays its own notices (a worker that died) to sys.stdout, which carries only the JSON lines here
    with contextlib.redirect_stdout(sys.stderr), local_ray(num_cpus=2, object_store_mb=128):
        with RewardPool(spec, options, config) as pool:
            try:
                return pool.score(samples).results
            except RewardFailed as failure:  # still print every row: that is what `check` is for
                return failure.batch.results


def run_list(args: argparse.Namespace) -> int:
    from rewards.registry import registered

    print("\n".join(registered()))
    return 0

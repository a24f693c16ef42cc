"""`posttrain`: the command line of keye-posttrain.

Each subcommand lives in `posttrain/commands/<name>.py` and exposes `register(subparsers)`; this file only
assembles them, so adding a command never touches the others. Exit codes: 0 done, 2 a bad recipe, argument or
file (the message says which), 1 a run stopped by a failure (a reward failing past `reward.max_error_rate`, or a
crash with its traceback).
"""

from __future__ import annotations

import argparse
import sys

from posttrain.commands import cold_start, demo, generate, model, plan, recipes, report, reward, traces
from rewards.health import RewardHealthError

COMMANDS = [recipes, plan, model, generate, reward, cold_start, demo, traces, report]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posttrain", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except (ValueError, FileNotFoundError, FileExistsError, TypeError) as error:
        print(f"posttrain {args.command}: error: {error}", file=sys.stderr)
        return 2
    except RewardHealthError as error:  # a run its reward's failures stopped: the message says which and where
        print(f"posttrain {args.command}: stopped: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

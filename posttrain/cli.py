"""`posttrain`: the command line of keye-posttrain.

Each subcommand lives in `posttrain/commands/<name>.py` and exposes `register(subparsers)`; this file only
assembles them, so adding a command never touches the others.

Exit codes: 0 done; 2 a bad recipe, override, argument or file, printed as one line that says which and how to
fix it; 1 a run stopped by a failure (a reward failing past `reward.max_error_rate`) or a crash, with its
traceback; 130 stopped by Ctrl-C or SIGTERM, with one line saying where (run the same command to resume). A
ValueError or TypeError that is none of the input errors the toolkit raises on purpose
(`INPUT_ERRORS`) may be bad input reported plainly or a bug deep inside training, so it prints its one line, exits
2, and writes its full traceback to a file the line names (a temp file: a crash hours into a run need not be rerun
to be debugged).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import traceback

from posttrain.commands import cold_start, demo, generate, model, plan, recipes, report, reward, traces
from rewards.health import RewardHealthError

COMMANDS = [recipes, plan, model, generate, reward, cold_start, demo, traces, report]

# raised on purpose for input the user must fix, with a message that says where and how; named, not imported, so
# `posttrain --help` does not load torch to know them
INPUT_ERRORS = {
    "builtins.FileNotFoundError", "builtins.FileExistsError",
    "posttrain.recipe.RecipeError",  # the recipe or an override
    "posttrain.stage_settings.StageSettingsChanged",  # a resume whose recipe changed a finished stage
    "posttrain.placement.PlacementError",  # actors that do not fit the cluster
    "rewards.registry.RewardSpecError", "rewards.reward_process.RewardLoadError",  # a reward that does not load
    "cold_start_data.user_data.UserDataError",  # rows of the user's cold-start data
    "posttrain.model_import.ModelImportError",  # a model file `model import` cannot read
}


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
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: one line, where it stopped (runner.RunInterrupted)
        print(f"posttrain {args.command}: stopped: {str(stop) or 'interrupted (Ctrl-C)'}", file=sys.stderr)
        return 130
    except RewardHealthError as error:  # a run its reward's failures stopped: the message says which and where
        print(f"posttrain {args.command}: stopped: {error}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as error:
        print(f"posttrain {args.command}: error: {error}", file=sys.stderr)
        if not is_input_error(error):
            print(f"  (full traceback in {save_traceback(error, args.command)})", file=sys.stderr)
        return 2


def is_input_error(error: BaseException) -> bool:
    return any(f"{cls.__module__}.{cls.__qualname__}" in INPUT_ERRORS for cls in type(error).__mro__)


def save_traceback(error: BaseException, command: str) -> str:
    """Write `error`'s traceback to a new temp file; returns its path."""
    with tempfile.NamedTemporaryFile("w", prefix=f"posttrain-{command}-", suffix=".traceback.txt",
                                     delete=False) as file:
        file.write("".join(traceback.format_exception(error)))
    return file.name


if __name__ == "__main__":
    sys.exit(main())

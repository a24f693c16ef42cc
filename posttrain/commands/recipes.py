"""`posttrain run|validate|ls|cp`: run a recipe, check one, list the shipped ones, copy one to edit.

`validate` checks the schema, that this machine can run the recipe's rollout engine, what the recipe names (its
rewards, data files and columns, an SFT stage's warmup against its rows: `posttrain.recipe_checks`), and that the
actors fit the declared cluster (`posttrain plan` shows the layout). `run` makes the same checks before the
cluster starts.

A recipe argument is a path or the name of a shipped recipe (`tiny/rl_math`). Overrides follow the recipe as
`key.sub=value` (e.g. `stages.1.steps=50 rollout.sampling.temperature=0.8`).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from rich.console import Console
from rich.table import Table

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


def register(subparsers) -> None:
    run = subparsers.add_parser("run", help="run (or resume) a recipe end to end")
    run.add_argument("recipe")
    run.add_argument("overrides", nargs="*", help="key.sub=value")
    run.set_defaults(run=run_recipe_command)

    validate = subparsers.add_parser("validate", help="check a recipe without running it")
    validate.add_argument("recipe")
    validate.add_argument("overrides", nargs="*")
    validate.set_defaults(run=validate_command)

    ls = subparsers.add_parser("ls", help="list the shipped recipes")
    ls.set_defaults(run=ls_command)

    cp = subparsers.add_parser("cp", help="copy a shipped recipe to edit it")
    cp.add_argument("name")
    cp.add_argument("dest", type=Path)
    cp.set_defaults(run=cp_command)


def resolve(recipe: str) -> Path:
    path = Path(recipe)
    if path.exists():
        return path
    shipped = RECIPES_DIR / (recipe if recipe.endswith(".yaml") else f"{recipe}.yaml")
    if shipped.exists():
        return shipped
    raise FileNotFoundError(f"recipe {recipe!r} is neither a file nor a shipped recipe; shipped: "
                            f"{', '.join(shipped_names())}")


def shipped_names() -> list[str]:
    return sorted(str(p.relative_to(RECIPES_DIR).with_suffix("")) for p in RECIPES_DIR.rglob("*.yaml"))


def validate_command(args: argparse.Namespace) -> int:
    """Schema, the rollout engine on this machine, what the recipe names, and the placement on the declared
    cluster."""
    from posttrain.placement import make_plan
    from posttrain.recipe_checks import load_recipe

    path = resolve(args.recipe)
    recipe = load_recipe(path, args.overrides)
    make_plan(recipe, source=str(path))
    stages = ", ".join(f"{s.kind}" for s in recipe.stages)
    Console().print(f"[green]ok[/] {args.recipe}: {recipe.name} ({stages})")
    return 0


def run_recipe_command(args: argparse.Namespace) -> int:
    from posttrain.quiet import quiet_libraries
    from posttrain.recipe_checks import load_recipe
    from posttrain.runner import run_recipe

    quiet_libraries()

    recipe = load_recipe(resolve(args.recipe), args.overrides)
    console = Console()
    summaries = run_recipe(recipe, console)
    table = Table(title=f"{recipe.name}: {recipe.run_dir}")
    for column in ("stage", "seconds", "result"):
        table.add_column(column)
    for s in summaries:
        table.add_row(s["stage"], str(s.get("seconds", "")), s.get("headline", ""))
    console.print(table)
    return 0


def ls_command(args: argparse.Namespace) -> int:
    from posttrain.recipe_checks import load_recipe

    table = Table(title="shipped recipes")
    table.add_column("name")
    table.add_column("stages")
    table.add_column("description")
    for name in shipped_names():
        recipe = load_recipe(RECIPES_DIR / f"{name}.yaml", check_environment=False)  # listing, not running
        table.add_row(name, " -> ".join(s.kind for s in recipe.stages), recipe.description)
    Console().print(table)
    return 0


def cp_command(args: argparse.Namespace) -> int:
    source = resolve(args.name)
    dest = args.dest / source.name if args.dest.is_dir() else args.dest
    if dest.exists():
        raise FileExistsError(f"{dest} exists; choose another destination")
    dest.write_text(renamed(source.read_text(), dest.stem))
    Console().print(f"copied {source.relative_to(RECIPES_DIR)} to {dest} as `name: {dest.stem}` (its runs go to "
                    f"their own directory); edit it, then `posttrain run {dest}`")
    return 0


def renamed(text: str, name: str) -> str:
    r"""The recipe text with its top-level `name:` set to `name` (comments and layout kept), so a copy's runs do not
    land in (and resume) the original's run directory.

    >>> renamed("# tiny\nname: tiny-rl-math  # the run\nseed: 0\n", "mine")
    '# tiny\nname: mine  # the run\nseed: 0\n'
    """
    line = re.compile(r"^name:[^#\n]*?(\s*#.*)?$", re.MULTILINE)
    if line.search(text):
        return line.sub(lambda m: f"name: {name}{m.group(1) or ''}", text, count=1)
    return f"name: {name}\n{text}"

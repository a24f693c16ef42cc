"""The stage table names every kind the recipe schema accepts, and the stages do not import the runner."""

from __future__ import annotations

import ast
from pathlib import Path

import posttrain.stages
from posttrain.recipe import Stage
from posttrain.recipe_errors import union_members
from posttrain.stages.registry import STAGES


def test_the_table_holds_exactly_the_recipe_schemas_stage_kinds():
    """A kind added to `posttrain.recipe.Stage` without a line in `STAGES` (or the reverse) fails here, not in a
    user's run."""
    kinds = set(union_members(Stage))
    assert "rl" in kinds and "anneal" in kinds  # the union was read (a Literal of several kinds included)
    assert set(STAGES) == kinds


def test_no_stage_imports_the_runner():
    """The runner imports the stages (through the table); a stage importing it back would close the circle."""
    found = []
    for path in sorted(Path(posttrain.stages.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}:{node.lineno} {n}" for n in names if n == "posttrain.runner"]
            if isinstance(node, ast.ImportFrom) and node.module == "posttrain":
                found += [f"{path.name}:{node.lineno} posttrain.runner" for a in node.names if a.name == "runner"]
    assert found == []

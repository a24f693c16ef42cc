"""DESIGN's arrows, for rewards: `posttrain -> {rollout, rewards} -> keye_vl`, so no module of `rewards/` imports
rollout, posttrain or the data packages (not even lazily, inside a function)."""

from __future__ import annotations

import ast
from pathlib import Path

import rewards

FORBIDDEN = ("rollout", "posttrain", "cold_start_data", "pretrain_data")


def test_rewards_imports_none_of_the_packages_above_it():
    found = []
    for path in sorted(Path(rewards.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert found == []

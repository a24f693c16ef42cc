"""DESIGN.md's arrows, for every package: which of our top-level packages each may import (not even lazily, inside
a function). `posttrain -> {pretrain_data, cold_start_data, rollout, rewards} -> keye_vl -> keye_protocol`, and
`rollout, rewards -> runtime` (the small layer both need); nothing
but `bench` imports `posttrain`, and nothing imports `bench`. `keye_protocol` sits under `keye_vl`, so a package
that may import `keye_vl` may import it too. A dotted entry allows that module (and those under it) only."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BELOW_POSTTRAIN = ("keye_protocol", "keye_vl", "runtime", "rewards", "rollout", "cold_start_data", "pretrain_data")

MAY_IMPORT = {
    "keye_protocol": (),
    "keye_vl": ("keye_protocol",),
    "runtime": (),  # Ray start and GPU hiding, shared by rewards and rollout
    "rewards": ("keye_protocol", "keye_vl", "runtime"),
    "rollout": ("keye_protocol", "keye_vl", "runtime", "rewards.sandbox"),  # the agentic tool runs in the sandbox
    "cold_start_data": ("keye_protocol", "keye_vl", "rewards"),  # rewards: to verify the teachers' answers
    "pretrain_data": ("keye_protocol", "keye_vl", "cold_start_data.sources"),
    "posttrain": BELOW_POSTTRAIN,
    "bench": (*BELOW_POSTTRAIN, "posttrain"),
}

# Imports the table forbids that are still in the tree: (file, module it imports, or one above it), each with what
# fixing it takes. Remove an entry when its import goes: the test fails on an entry that excuses nothing.
KNOWN_EXCEPTIONS = {
    # The model teacher builds the engine's request and sampling types to call `engine.generate`. Fix: take a
    # plain `sample(messages, mode, n, seed) -> texts` callable that posttrain builds around the engine, or move
    # the engine's types to a layer under both packages.
    ("cold_start_data/teachers/model.py", "rollout.types"),
}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every absolute import in `path`; `from a import b` gives `a.b` (b may be a module)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def allowed(name: str, entries: tuple[str, ...]) -> bool:
    return any(name == entry or name.startswith(entry + ".") for entry in entries)


def test_every_package_imports_only_the_packages_below_it():
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(MAY_IMPORT), "a top-level package DESIGN.md's table does not place (or the reverse)"
    broken, excused = [], set()
    for package, entries in MAY_IMPORT.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            where = path.relative_to(ROOT).as_posix()
            for line, name in imports(path):
                if name.split(".")[0] not in MAY_IMPORT or name.split(".")[0] == package or allowed(name, entries):
                    continue
                exception = next((e for e in KNOWN_EXCEPTIONS if e[0] == where and allowed(name, (e[1],))), None)
                if exception:
                    excused.add(exception)
                else:
                    broken.append(f"{where}:{line} imports {name}; {package} may import "
                                  f"{', '.join(entries) or 'none of ours'}")
    assert broken == []
    assert excused == KNOWN_EXCEPTIONS, f"fixed: remove {sorted(KNOWN_EXCEPTIONS - excused)} from KNOWN_EXCEPTIONS"

"""YAML with line numbers, so recipe errors can point at the line a user must fix.

`load_yaml(path)` returns the plain data and a map from key paths (tuples of keys and list indices, as in
pydantic's error locations) to 1-based line numbers. It refuses what PyYAML would accept silently or crash on:
a key written twice in one mapping (PyYAML keeps the last), nesting deeper than `MAX_DEPTH` (PyYAML's
composer recurses, so 20000 nested lists end in a RecursionError), and aliases that expand past `MAX_NODES`
values (an "alias bomb": 440 bytes of nested `&a [*b, *b, ...]` build gigabytes when loaded). The composed
document is walked, aliases expanded, before anything is constructed, and the walk stops at the bound.
"""

from __future__ import annotations

from pathlib import Path

import yaml

Location = tuple[str | int, ...]
MAX_DEPTH = 64  # a recipe needs a handful of levels
MAX_NODES = 100_000  # values once aliases are expanded; the largest shipped recipe has a few hundred


def _too_deep(path) -> ValueError:
    return ValueError(f"{path}: nested deeper than {MAX_DEPTH} levels; a recipe is a few levels of sections "
                      f"and values (look for runaway brackets)")


def load_yaml(path: str | Path) -> tuple[dict, dict[Location, int]]:
    text = Path(path).read_text()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        lines: dict[Location, int] = {}
        if node is not None:
            _walk(node, (), lines, path, [MAX_NODES])
        data = yaml.safe_load(text)
    except RecursionError:
        raise _too_deep(path) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ValueError(f"{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe is a YAML mapping of sections (model, data, rollout, ...); "
                         f"found {type(data).__name__}")
    return data, lines


def _walk(node, path: Location, lines: dict[Location, int], file, budget: list[int]) -> None:
    """Record each key's line; `budget` is the number of values still allowed (shared by the whole walk)."""
    if len(path) > MAX_DEPTH:
        raise _too_deep(file)
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError(f"{file}: more than {MAX_NODES:,} values once its aliases (*name) are expanded; a recipe "
                         f"has a few hundred (look for aliases that repeat other aliases)")
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if key.value in first_line and key.tag != "tag:yaml.org,2002:merge":
                where = ".".join(map(str, path + (key.value,)))
                raise ValueError(f"{file}:{line}: duplicate key {key.value!r} ({where}; first at line "
                                 f"{first_line[key.value]}); YAML would keep only the last one: delete one of them")
            first_line[key.value] = line
            child = path + (key.value,)
            _walk(value, child, lines, file, budget)
            lines[child] = line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), lines, file, budget)


def line_of(lines: dict[Location, int], loc: Location) -> int | None:
    """The line of the deepest known prefix of `loc` (a missing key points at its parent)."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None

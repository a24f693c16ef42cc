"""YAML with line numbers, so recipe errors can point at the line a user must fix.

`load_yaml(path)` returns the plain data and a map from key paths (tuples of keys and list indices, as in
pydantic's error locations) to 1-based line numbers.
"""

from __future__ import annotations

from pathlib import Path

import yaml

Location = tuple[str | int, ...]


def load_yaml(path: str | Path) -> tuple[dict, dict[Location, int]]:
    text = Path(path).read_text()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ValueError(f"{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe is a YAML mapping of sections (model, data, rollout, ...); "
                         f"found {type(data).__name__}")
    lines: dict[Location, int] = {}
    _walk(node, (), lines)
    return data, lines


def _walk(node, path: Location, lines: dict[Location, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = path + (key.value,)
            _walk(value, child, lines)
            lines[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), lines)


def line_of(lines: dict[Location, int], loc: Location) -> int | None:
    """The line of the deepest known prefix of `loc` (a missing key points at its parent)."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None

"""Recipe errors in one shape, `file:line: key: message`, derived from the schema.

pydantic reports a failure in its own terms: a discriminated union puts the member's tag in the location
(`stages.2.reward_model.epochz` for the user's `stages.2.epochz`), a model validator's error sits at the model it
checks (the whole recipe: an empty location), and its message starts "Value error, ". This module turns each error
into the key path the user wrote, that key's own line (`posttrain.yaml_lines`), and a message with the valid
choices and a "did you mean". It knows the schema only through the pydantic models it is handed, so a new stage
kind or section needs nothing here. A validator that checks several keys raises `KeyedError` to say which key
is at fault, or `NestedErrors` to hand on the errors of a model it validated itself.
"""

from __future__ import annotations

import difflib
import types
from pathlib import Path
from typing import Annotated, Any, Iterator, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from posttrain.yaml_lines import Location, line_of


class KeyedError(ValueError):
    """A validator's error about one key: `key` is its path from the model being validated (`("stages", 1,
    "steps")` in a Recipe validator), so the error is shown at that key and its line, not at the whole model."""

    def __init__(self, key: Location, message: str):
        super().__init__(message)
        self.key = tuple(key)


class NestedErrors(ValueError):
    """A validator validated another model itself (a stage's learner overrides as a LearnerConfig): its errors,
    each shown at `key` + its own location, with `model`'s valid keys."""

    def __init__(self, key: Location, model: type[BaseModel], error: ValidationError):
        super().__init__(str(error))
        self.key, self.model, self.error = tuple(key), model, error


def format_errors(path: Path, error: ValidationError, root: type[BaseModel], lines: dict[Location, int],
                  overridden: dict[Location, str]) -> str:
    """Every error of `error` (validating `root`) as `where: key: message`; `where` is the file and the key's
    line, or the command-line override that set the key (`overridden`: key path -> `key=value`)."""
    return format_problems(path, list(problems(error, root)), lines, overridden)


def format_problems(path: Path, found: list[tuple[Location, str]], lines: dict[Location, int],
                    overridden: dict[Location, str]) -> str:
    """(key path, message) pairs, from the schema or from `posttrain.recipe_checks`, as one error's text."""
    shown = []
    for key, message in found:
        dotted = ".".join(map(str, key))
        shown.append(f"{where(path, lines, overridden, key)}: {dotted + ': ' if dotted else ''}{message}")
    return "invalid recipe\n  " + "\n  ".join(shown)


def problems(error: ValidationError, root: type[BaseModel], prefix: Location = ()) -> Iterator[tuple[Location, str]]:
    """(the user's key path, the message) for each error of `error`, raised validating `root` at `prefix`."""
    for item in error.errors():
        key, holder, annotation = schema_path(root, item["loc"])
        ctx = item.get("ctx") or {}
        cause = ctx.get("error")
        if isinstance(cause, NestedErrors):
            yield from problems(cause.error, cause.model, prefix + key + cause.key)
        elif isinstance(cause, KeyedError):
            yield prefix + key + cause.key, str(cause)
        elif "discriminator" in ctx:  # a bad or missing `kind`: pydantic names the section, the fault is its tag
            yield prefix + key + (ctx["discriminator"].strip("'"),), explain_tag(item, annotation)
        else:
            yield prefix + key, explain(item, key, holder)


def where(path: Path, lines: dict[Location, int], overridden: dict[Location, str], key: Location) -> str:
    """`file:line` of `key`, or `override k=v` when a command-line override set it (or created it: a misspelt
    key in an override is in no line of the file)."""
    for set_at, text in reversed(overridden.items()):  # the last override of a key wins, as when applied
        if key[:len(set_at)] == set_at or (key not in lines and set_at[:len(key)] == key):
            return f"override {text}"
    return f"{path}:{line_of(lines, key) or '?'}"


def explain(item: dict, key: Location, holder: type[BaseModel] | None) -> str:
    """The message for one pydantic error at `key`, whose last part is a field of `holder`."""
    kind, value = item["type"], item.get("input")
    if kind == "extra_forbidden":
        choices = list(getattr(holder, "model_fields", {}))
        return f"unknown key {key[-1]!r}{did_you_mean(key[-1], choices)} (valid keys: {', '.join(sorted(choices))})"
    if kind == "literal_error":
        expected = str(item["ctx"]["expected"])
        choices = [c.strip(" '") for c in expected.replace(" or ", ",").split(",") if c.strip(" '")]
        return f"{value!r} is not one of {choices}{did_you_mean(value, choices)}"
    if kind == "missing":
        return f"required key {key[-1]!r} is missing" if key else item["msg"]
    cause = (item.get("ctx") or {}).get("error")
    if kind == "value_error" and cause is not None:  # a validator's own words, without pydantic's "Value error, "
        return str(cause)
    if value is None or isinstance(value, (dict, list)):  # a whole section or list: the key says which
        return item["msg"]
    return f"{item['msg']} (got {value!r})"


def explain_tag(item: dict, annotation) -> str:
    """The message for a discriminated union's tag (a stage's `kind`) that is missing or names no member."""
    choices = list(union_members(annotation))
    if item["type"] == "union_tag_not_found":
        return f"required key {item['ctx']['discriminator']} is missing; give one of {choices}"
    tag = item["ctx"]["tag"]
    return f"{tag!r} is not one of {choices}{did_you_mean(tag, choices)}"


def did_you_mean(bad, choices: list[str]) -> str:
    guess = difflib.get_close_matches(str(bad), choices, n=1)
    return f"; did you mean {guess[0]!r}?" if guess else ""


def schema_path(root: type[BaseModel], loc: tuple) -> tuple[Location, type[BaseModel] | None, Any]:
    """pydantic's error location -> (the key path as the recipe writes it, the model whose field its last key
    is, the annotation of that key's value). Walks the schema: a discriminated union's tag in `loc` picks the
    member and is dropped; `[key]` (a bad dict key) is dropped too; past what the schema describes (a free-form
    dict) the parts are kept as they are."""
    key: list = []
    annotation, holder = root, None
    for part in loc:
        annotation = _unwrapped(annotation)
        members = union_members(annotation)
        if part in members:
            annotation = members[part]
            continue
        if part == "[key]":
            continue
        holder = annotation if _is_model(annotation) else None
        annotation = _child(annotation, part)
        key.append(part)
    return tuple(key), holder, annotation


def union_members(annotation) -> dict[str, type[BaseModel]]:
    """A discriminated union's members by their tags (the values their discriminator field's Literal allows);
    {} for any other annotation."""
    if get_origin(annotation) is not Annotated:
        return {}
    union, *metadata = get_args(annotation)
    field = next((m.discriminator for m in metadata if isinstance(getattr(m, "discriminator", None), str)), None)
    if field is None:
        return {}
    return {tag: member for member in get_args(union) for tag in get_args(member.model_fields[field].annotation)}


def _child(annotation, part) -> Any:
    """The annotation one key or index below `annotation`; None where the schema says no more."""
    if _is_model(annotation):
        field = annotation.model_fields.get(part)
        if field is None:
            return None
        if isinstance(field.discriminator, str):  # pydantic keeps a field's discriminator apart from its type
            return Annotated[field.annotation, field]
        return field.annotation
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (list, set, frozenset) and args:
        return args[0]
    if origin is tuple and args and isinstance(part, int):  # tuple[X, ...] or one type per position
        return args[0] if args[-1] is Ellipsis else args[min(part, len(args) - 1)]
    if origin is dict and len(args) == 2:
        return args[1]
    return None


def _unwrapped(annotation) -> Any:
    """`X | None` -> X, and Annotated without a discriminator -> its type: pydantic adds nothing to the
    location for either."""
    if get_origin(annotation) is Annotated and not union_members(annotation):
        return _unwrapped(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        present = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(present) == 1:
            return _unwrapped(present[0])
    return annotation


def _is_model(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


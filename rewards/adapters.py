"""Signature adapters: three ways of writing a reward, one way of calling it.

Every reward, whatever its form, becomes a `LoadedReward`: `reward(samples) -> list[raw]`, one raw value per
sample (a number, a dict of numbers, or None). The forms, detected from the signature:

- native:          ``f(sample) -> float | dict[str, float]`` (sync or async);
- native batched:  ``f(samples) -> list[...]``, marked by ``@reward(name, batched=True)`` (models score batches);
- TRL:             ``f(prompts, completions, **columns) -> list[float | None]`` (sync or async; any function
  naming ``prompts``, ``completions`` or ``completion_ids``), called with keywords as TRL's GRPO trainer calls
  it: ``prompts``, ``completions``, ``completion_ids`` and every dataset column, the ground truth also under
  TRL's column name ``solution`` when the row has none. Completions are text for text prompts and
  ``[{"role": "assistant", "content": ...}]`` for conversational ones, as in TRL, unless the function's
  ``completions`` annotation says which it takes: TRL's shipped rewards (``trl.rewards``) declare
  ``list[list[dict[str, str]]]`` and index ``completion[0]["content"]``, so they get messages on text rows too;
  ``list[str]`` gets text on conversational rows;
- verl:            ``compute_score(data_source, solution_str, ground_truth, extra_info)``.

This module knows nothing about where a function comes from (that is `registry`) or how failures are
isolated (that is `worker`); it only maps calls, checks the number of values returned, and says which line of
the function's own file an error came from (`user_line`), since the adapter's frames are not the user's.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import traceback
from collections import abc
from dataclasses import dataclass
from typing import Any, Callable, get_args, get_origin

from rewards.result import InvalidReward
from rewards.sample import Sample

FORMS_HELP = ("expected one of: a native reward `f(sample) -> float | dict[str, float]`; a TRL reward "
              "`f(prompts, completions, **columns) -> list[float | None]`; a verl reward "
              "`compute_score(data_source, solution_str, ground_truth, extra_info)`")
# Columns that TRL passes under their own keyword names rather than as dataset columns.
_TRL_OWN = ("prompt", "completion", "completion_ids")
# Keywords only TRL's convention uses: a function naming one of them is written for TRL.
_TRL_KEYWORDS = {"prompts", "completions", "completion_ids"}


@dataclass
class LoadedReward:
    spec: str  # what the user wrote: a registered name, module:func or path.py:func
    name: str  # how its value is logged
    form: str  # "native" | "native_batched" | "trl" | "verl"
    fn: Callable

    @property
    def batched(self) -> bool:
        return self.form in ("native_batched", "trl")

    def __call__(self, samples: list[Sample]) -> list[Any]:
        call = {"native": _call_native, "native_batched": _call_native_batched,
                "trl": _call_trl, "verl": _call_verl}[self.form]
        out = call(self.fn, samples)
        if len(out) != len(samples):
            raise InvalidReward(f"reward {self.spec!r} returned {len(out)} values for {len(samples)} samples; "
                                f"a batched reward returns one value per sample")
        return out


def source_of(fn: Callable) -> tuple[str, int] | None:
    """(file, first line) of the code behind `fn`, through partials (bound options), decorators and callable
    objects; None for a builtin."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    fn = inspect.unwrap(fn)
    code = getattr(fn, "__code__", None) or getattr(getattr(type(fn), "__call__", None), "__code__", None)
    return (code.co_filename, code.co_firstlineno) if code is not None else None


def user_line(error: BaseException, fn: Callable) -> str | None:
    """`file.py:line` (the file's name, as error records write it) in the file that defines `fn`, where `error`
    came from: the deepest traceback frame there (the user's line that raised or called what raised, not this
    package's plumbing), or `fn`'s definition when the call failed before entering it (a TRL function naming a
    column the data does not have).

    >>> def bad(sample):
    ...     return {}["ground_truth"]
    >>> try:
    ...     bad(None)
    ... except KeyError as error:
    ...     user_line(error, bad).endswith(f":{bad.__code__.co_firstlineno + 1}")
    True
    """
    source = source_of(fn)
    if source is None:
        return None
    file, first = source
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if frame.filename == file]
    name = os.path.basename(file)
    return f"{name}:{lines[-1]}" if lines else f"{name}:{first}, the function's definition"


def detect_form(fn: Callable, spec: str) -> str:
    """Which of the three forms `fn` is written in; TypeError naming `spec` when it fits none."""
    if getattr(fn, "__reward_batched__", False):
        return "native_batched"
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError) as error:
        raise TypeError(f"reward {spec!r}: cannot read the signature of {fn!r} ({error}); {FORMS_HELP}") from None
    names = set(params)
    if {"data_source", "solution_str", "ground_truth"} <= names:
        return "verl"
    if names & _TRL_KEYWORDS:
        return "trl"
    required = [p for p in params.values() if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(required) == 1:
        return "native"
    shown = f"{getattr(fn, '__name__', type(fn).__name__)}{inspect.signature(fn)}"
    raise TypeError(f"reward {spec!r} has signature {shown}, which fits no reward form; {FORMS_HELP}")


def _resolve(value):
    return asyncio.run(value) if inspect.isawaitable(value) else value


def _call_native(fn, samples: list[Sample]) -> list:
    return [_resolve(fn(sample)) for sample in samples]


def _call_native_batched(fn, samples: list[Sample]) -> list:
    out = _resolve(fn(samples))
    return _as_list(out, fn)


def _as_list(out, fn) -> list:
    if not isinstance(out, (list, tuple)):
        raise InvalidReward(f"batched reward {getattr(fn, '__name__', fn)!r} returned {type(out).__name__}; "
                            f"expected a list with one value per sample")
    return list(out)


def completions_annotation(fn: Callable) -> str | None:
    """What `fn`'s ``completions`` annotation asks for: "messages" (``list[list[dict]]``), "text"
    (``list[str]``), or None (no annotation, or one that admits both: TRL's per-prompt rule applies).

    >>> def f(completions: list[list[dict[str, str]]], **kwargs): ...
    >>> completions_annotation(f), completions_annotation(lambda completions: None)
    ('messages', None)
    """
    try:
        param = inspect.signature(fn, eval_str=True).parameters.get("completions")
    except Exception:  # an annotation that does not evaluate (a name imported only for type checking)
        return None
    if param is None:
        return None
    outer = param.annotation  # list[...]; a union (list[str] | list[list[dict]]) admits both
    if get_origin(outer) not in (list, abc.Sequence) or not get_args(outer):
        return None
    item = get_args(outer)[0]
    if item is str:
        return "text"
    if get_origin(item) in (list, abc.Sequence) and get_args(item):
        message = get_args(item)[0]
        if message in (dict, abc.Mapping) or get_origin(message) in (dict, abc.Mapping):
            return "messages"
    return None


def trl_arguments(samples: list[Sample], completions_as: str | None = None) -> dict[str, list]:
    """The keywords TRL passes a reward function. Conversational prompts (message lists) get conversational
    completions (``[{"role": "assistant", "content": ...}]``), as in TRL; text prompts get text.
    `completions_as` ("messages" | "text") overrides that rule for every sample (see `completions_annotation`).
    The ground truth also goes under ``solution`` (TRL's datasets' name for it) in rows without that column."""
    conversational = [not isinstance(s.columns.get("prompt", s.prompt), str) for s in samples]
    if completions_as is not None:
        as_messages = [completions_as == "messages"] * len(samples)
    else:
        as_messages = conversational
    kwargs: dict[str, list] = {
        "prompts": [s.prompt if conv else s.columns["prompt"] for s, conv in zip(samples, conversational)],
        "completions": [[{"role": "assistant", "content": s.completion}] if msg else s.completion
                        for s, msg in zip(samples, as_messages)],
        "completion_ids": [list(s.completion_ids) for s in samples],
    }
    keys = sorted({k for s in samples for k in s.columns if k not in _TRL_OWN})
    for key in keys:
        kwargs[key] = [s.columns.get(key) for s in samples]
    kwargs["solution"] = [s.columns["solution"] if "solution" in s.columns else s.ground_truth for s in samples]
    return kwargs


# What a TRL call supplies besides the row's columns (`trl_arguments`, `_call_trl`), and what a verl call passes.
_TRL_SUPPLIED = {"prompts", "completions", "completion_ids", "solution", "trainer_state"}
_VERL_SUPPLIED = {"data_source", "solution_str", "ground_truth", "extra_info"}


def missing_arguments(reward: LoadedReward, columns: set[str]) -> list[str]:
    """The required parameters of `reward` that a call on rows with `columns` would not supply: a TRL function's
    named columns the rows lack (checked at `validate`, before a run fails on its first batch), a verl function's
    parameters beyond the four it is called with. Native rewards take the whole sample: nothing to check.

    >>> def f(prompts, completions, ground_truth, **kwargs): ...
    >>> missing_arguments(LoadedReward("f", "f", "trl", f), {"prompt", "answer"})
    ['ground_truth']
    """
    if reward.form not in ("trl", "verl"):
        return []
    params = inspect.signature(reward.fn).parameters.values()
    required = [p.name for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    supplied = _VERL_SUPPLIED if reward.form == "verl" else _TRL_SUPPLIED | (set(columns) - set(_TRL_OWN))
    return [name for name in required if name not in supplied]


def _call_trl(fn, samples: list[Sample]) -> list:
    kwargs = trl_arguments(samples, completions_annotation(fn))
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    if "trainer_state" in params and "trainer_state" not in kwargs:
        kwargs["trainer_state"] = None  # TRL >= 0.20 passes it; there is no trainer here
    return _as_list(_resolve(fn(**kwargs)), fn)


def _call_verl(fn, samples: list[Sample]) -> list:
    out = []
    for s in samples:
        value = _resolve(fn(data_source=s.columns.get("data_source", ""), solution_str=s.completion,
                            ground_truth=s.ground_truth, extra_info=s.columns.get("extra_info") or {}))
        out.append(value)
    return out

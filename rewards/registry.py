"""Finding a reward from its spec: a registered name, ``module.path:func`` or ``path/to/file.py:func``.

`@reward("name")` registers a function (or a factory, for rewards that load a model once; a function annotated
to return a ``Callable``, as TRL's ``get_cosine_scaled_reward(max_len)`` is, is a factory too); `load_reward(spec)`
resolves a spec, binds options, and hands the function to `adapters` for signature detection. A mapping
``{spec: weight}`` loads a weighted combination. Every failure is raised here, at load time, naming the spec
and what was expected, so a recipe with a broken reward fails before training starts.

This module knows nothing about scoring, workers or isolation.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
import typing
from collections import abc
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Callable

from rewards.adapters import LoadedReward, detect_form

_REGISTRY: dict[str, Callable] = {}
# Modules whose import registers the built-in rewards (imported on the first lookup by name).
BUILTIN_MODULES = ("rewards.math_answer", "rewards.grounding", "rewards.counting", "rewards.choice",
                   "rewards.format", "rewards.repetition", "rewards.overlong", "rewards.reward_model",
                   "rewards.judge", "rewards.task_answer")
SPEC_HELP = "a registered name ({names}), 'module.path:func', or 'path/to/file.py:func'"


class RewardSpecError(ValueError):
    """A reward spec that does not resolve to a usable function."""


def reward(name: str, *, batched: bool = False, factory: bool = False):
    """Register a reward under `name`. `batched`: it takes a list of samples and returns a list.
    `factory`: calling it with the reward's options returns the reward (used to load a model once)."""
    def register(fn):
        existing = _REGISTRY.get(name)
        if existing is not None and _origin(existing) != _origin(fn):
            raise ValueError(f"reward name {name!r} is already registered by {_qualname(existing)}; "
                             f"choose another name for {_qualname(fn)}")
        fn.__reward_name__ = name
        fn.__reward_batched__ = batched
        fn.__reward_factory__ = factory
        _REGISTRY[name] = fn
        return fn
    return register


def _origin(fn) -> tuple[str, str]:
    """Where a function is defined: (file, qualified name). The same file imported under two module names
    (by path and by a test collector) defines the same reward, not a clash."""
    try:
        file = str(Path(inspect.getfile(fn)).resolve())
    except (TypeError, OSError):
        file = getattr(fn, "__module__", "?")
    return file, getattr(fn, "__qualname__", repr(fn))


def _qualname(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def registered() -> list[str]:
    _import_builtins()
    return sorted(_REGISTRY)


def _import_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def _help() -> str:
    return SPEC_HELP.format(names=", ".join(registered()))


# ------------------------------------------------------------------------------------------- resolution
def resolve(spec: str) -> Callable:
    """The object a string spec names (not yet adapted or instantiated)."""
    if not isinstance(spec, str) or not spec.strip():
        raise RewardSpecError(f"reward spec {spec!r} is not a string; expected {_help()}")
    path, sep, attr = spec.rpartition(":")
    if not sep:
        _import_builtins()
        if spec in _REGISTRY:
            return _REGISTRY[spec]
        if spec.endswith(".py"):
            raise RewardSpecError(f"reward spec {spec!r} names a file but no function; write '{spec}:func'")
        raise RewardSpecError(f"reward spec {spec!r} is not a registered reward; expected {_help()}")
    module = _load_file(spec, path) if spec_file(spec) else _import(spec, path)
    if not hasattr(module, attr):
        available = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        shown = ", ".join(available[:20]) + (", ..." if len(available) > 20 else "")
        raise RewardSpecError(f"reward spec {spec!r}: {path} has no attribute {attr!r}; its functions are "
                              f"[{shown}]")
    return getattr(module, attr)


def spec_file(spec: str) -> tuple[str, str] | None:
    """(file, function) of a ``path/to/file.py:func`` spec; None for a registered name or ``module.path:func``.
    A recipe resolves the file against its own folder (`posttrain.recipe`), so it needs the same rule as `resolve`.

    >>> spec_file("rewards/mine.py:score"), spec_file("mine.py:score"), spec_file("rewards.math_answer:math")
    (('rewards/mine.py', 'score'), ('mine.py', 'score'), None)
    """
    path, sep, attr = spec.rpartition(":")
    return (path, attr) if sep and (path.endswith(".py") or "/" in path) else None


def _import(spec: str, module_name: str):
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise RewardSpecError(f"reward spec {spec!r}: cannot import module {module_name!r} ({error}); expected "
                              f"{_help()}") from error


def _load_file(spec: str, path: str):
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise RewardSpecError(f"reward spec {spec!r}: file {file} does not exist; expected 'path/to/file.py:func' "
                              f"with a path relative to {Path.cwd()} or absolute")
    # One module per file path, so loading the same file twice keeps one set of registrations.
    name = f"_reward_file_{hashlib.sha1(str(file).encode()).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise RewardSpecError(f"reward spec {spec!r}: importing {file} failed: {type(error).__name__}: "
                              f"{error}") from error
    return module


# ------------------------------------------------------------------------------------------- loading
def load_reward(spec, **options) -> LoadedReward:
    """A callable `reward(samples) -> list[raw value]` from a spec.

    `spec`: a string (see `resolve`), a mapping ``{spec: weight}`` (weighted combination), or a function.
    `options` are passed to a factory, or bound as keyword arguments of a plain function.

    >>> load_reward("math").form
    'native'
    """
    if isinstance(spec, LoadedReward):
        return spec
    if isinstance(spec, Mapping):
        from rewards.combine import combine

        return combine(spec, **options)
    label = spec if isinstance(spec, str) else _qualname(spec)
    fn = resolve(spec) if isinstance(spec, str) else spec
    if not callable(fn):
        raise RewardSpecError(f"reward spec {label!r} names a {type(fn).__name__}, not a function; expected "
                              f"{_help()}")
    name = getattr(fn, "__reward_name__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    built_by_factory = is_factory(fn) and not getattr(fn, "__reward_factory__", False)
    fn = _bind(fn, options, label)
    if built_by_factory:  # TRL's factories name what they build: `cosine_scaled_reward`
        name = getattr(fn, "__name__", None) or name
    try:
        form = detect_form(fn, label)
    except TypeError as error:
        raise RewardSpecError(str(error)) from None
    return LoadedReward(spec=label, name=name, form=form, fn=fn)


def is_factory(fn: Callable) -> bool:
    """Registered with ``factory=True``, or annotated to return a ``Callable`` (TRL's ``get_*_reward``)."""
    if getattr(fn, "__reward_factory__", False):
        return True
    try:
        returns = inspect.signature(fn, eval_str=True).return_annotation
    except Exception:  # no signature, or an annotation that does not evaluate: not declared a factory
        return False
    return returns is abc.Callable or typing.get_origin(returns) is abc.Callable


def _bind(fn: Callable, options: dict, label: str) -> Callable:
    _check_options(fn, options, label)
    if is_factory(fn):
        return fn(**options)
    if not options:
        return fn
    bound = partial(fn, **options)
    for attr in ("__reward_batched__", "__name__"):
        if hasattr(fn, attr):
            setattr(bound, attr, getattr(fn, attr))
    return bound


def _check_options(fn: Callable, options: dict, label: str) -> None:
    """Options must be keyword parameters of `fn` (of a factory's constructor; of a function beyond its
    first, sample-taking, parameter); a factory's required parameters must all be given."""
    params = list(inspect.signature(fn).parameters.values())
    factory = is_factory(fn)
    if options and not any(p.kind is p.VAR_KEYWORD for p in params):
        accepted = {p.name for p in (params if factory else params[1:])
                    if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise RewardSpecError(f"reward {label!r} does not take the options {unknown}; it takes "
                                  f"{sorted(accepted)}")
    if factory:
        missing = [p.name for p in params if p.default is p.empty and p.kind in (p.KEYWORD_ONLY,
                   p.POSITIONAL_OR_KEYWORD) and p.name not in options]
        if missing:
            example = json.dumps({name: "..." for name in missing})
            raise RewardSpecError(f"reward {label!r} is a factory (it returns the reward function) and needs the "
                                  f"options {missing}: pass them as `options:` in the recipe's reward section or "
                                  f"`--options '{example}'`")


def validate_reward(spec, **options) -> str:
    """Check a spec the way a recipe validator does: it resolves, its options fit, its signature fits a form.
    Factories (reward models, judges) are not built, so no model is loaded. Returns the form."""
    if isinstance(spec, Mapping):
        from rewards.combine import weight_and_options

        for part, value in spec.items():
            validate_reward(part, **weight_and_options(part, value)[1])
        return "native_batched"
    fn = resolve(spec) if isinstance(spec, str) else spec
    if callable(fn) and is_factory(fn):
        _check_options(fn, options, str(spec))
        return "factory"
    return load_reward(spec, **options).form

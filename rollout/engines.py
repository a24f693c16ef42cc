"""Rollout engines by name, and the keyword options each one accepts.

`build_engine(kind, model_dir, **options)` builds exactly the engine a recipe names with exactly its options:
an option the engine's constructor does not take is a TypeError naming it (never dropped), and an engine whose
package is missing fails on import (never a fallback to another engine). The accepted options are read from the
engine class's constructor, so the check cannot drift from the engines. Knows nothing of recipes.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

ENGINES = {"transformers": ("rollout.hf_engine", "TransformersEngine"),
           "compact": ("rollout.compact_engine", "CompactEngine"),
           "vllm": ("rollout.vllm_engine", "VLLMEngine")}
CPU_ENGINES = ("transformers", "compact")  # they hold the model in the worker's process and generate on its CPU
# constructor parameters that are the engine's inputs rather than options a recipe may set
NOT_OPTIONS = {"self", "model", "model_dir", "processor_or_tokenizer"}


def engine_class(kind: str) -> type:
    if kind not in ENGINES:
        raise ValueError(f"unknown rollout engine {kind!r}; choose one of {sorted(ENGINES)}")
    module, name = ENGINES[kind]
    return getattr(importlib.import_module(module), name)


def accepted_options(kind: str) -> set[str] | None:
    """Keyword options of the engine's constructor; None if it takes any (`**kwargs`)."""
    params = inspect.signature(engine_class(kind).__init__).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.name not in NOT_OPTIONS and p.kind is not inspect.Parameter.VAR_POSITIONAL}


def check_options(kind: str, options: dict) -> None:
    accepted = accepted_options(kind)
    unknown = sorted(set(options) - accepted) if accepted is not None else []
    if unknown:
        raise TypeError(f"rollout engine {kind!r} does not accept option(s) {unknown}; it accepts "
                        f"{sorted(accepted)}")


def build_engine(kind: str, model_dir: str | Path, **options):
    check_options(kind, options)
    return engine_class(kind).from_pretrained(model_dir, **options)

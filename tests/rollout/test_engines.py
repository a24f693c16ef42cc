"""The engine a worker builds is exactly the one named, with exactly its options: no fallback, nothing dropped."""

import sys

import pytest

from rollout.engines import accepted_options, build_engine, check_options
from rollout.worker import RolloutWorker


def test_options_are_read_from_each_engines_constructor():
    assert accepted_options("transformers") == {"max_batch_size", "bf16_autocast"}
    vllm = accepted_options("vllm")  # read from rollout/vllm_engine.py without importing vllm
    assert vllm is None or {"gpu_memory_utilization", "enable_sleep_mode"} <= vllm


def test_an_option_the_engine_does_not_take_is_a_type_error_naming_it(tmp_path):
    with pytest.raises(TypeError, match=r"rollout engine 'transformers' does not accept option\(s\) \['tensor_parallel"
                                        r"_size'\]; it accepts \['bf16_autocast', 'max_batch_size'\]"):
        build_engine("transformers", tmp_path, tensor_parallel_size=2)  # refused before any model is read
    if accepted_options("vllm") is not None:
        with pytest.raises(TypeError, match=r"'vllm' does not accept option\(s\) \['gpu_memory'\]"):
            check_options("vllm", {"gpu_memory": 0.5})
    with pytest.raises(ValueError, match="unknown rollout engine 'vlm'"):
        build_engine("vlm", tmp_path)


def test_vllm_without_vllm_fails_instead_of_generating_with_transformers(monkeypatch, tiny_model_dir):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine sets it before importing; restore after
    with pytest.raises(ImportError):
        RolloutWorker(tiny_model_dir, engine="vllm", engine_options={"gpu_memory_utilization": 0.3})


def test_worker_passes_its_engine_options_and_refuses_to_sleep_without_the_hook(tiny_model_dir):
    worker = RolloutWorker(tiny_model_dir, engine="transformers", engine_options={"max_batch_size": 3})
    assert worker.engine.max_batch_size == 3
    assert worker.devices()["gpu_ids"] == []  # outside Ray nothing is reserved, nothing hidden
    with pytest.raises(TypeError, match=r"'transformers' has no sleep\(\)/wake_up\(\): colocated placement"):
        RolloutWorker(tiny_model_dir, engine="transformers", sleeps=True)

"""Shared fixtures: the tiny model, tokenizer and processor are built once per session (offline)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from keye_vl.tokenizer import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_processor(tiny_tokenizer):
    from keye_vl.presets import preset_processing
    from keye_vl.processing import KeyeVLProcessor

    return KeyeVLProcessor.build(tiny_tokenizer, preset_processing("keye-tiny"))


@pytest.fixture(scope="session")
def tiny_config():
    from keye_vl.configuration import KeyeVLConfig

    return KeyeVLConfig.from_preset("keye-tiny")


@pytest.fixture()
def tiny_model(tiny_config):
    from keye_vl.modeling import KeyeForConditionalGeneration

    torch.manual_seed(0)
    return KeyeForConditionalGeneration(tiny_config).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from keye_vl.weights import init_model_dir

    out = tmp_path_factory.mktemp("keye-tiny")
    init_model_dir(out, "keye-tiny")
    return out

import pytest

from rollout.hf_engine import TransformersEngine


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return TransformersEngine.from_pretrained(tiny_model_dir)

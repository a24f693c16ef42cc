"""The model teacher through the real rollout engine (the untrained tiny model: it verifies nothing)."""

import random

import pytest

from cold_start_data.build import build, make_teachers
from cold_start_data.config import BuildConfig
from cold_start_data.pipeline import BuildError
from cold_start_data.sources.arithmetic import addition_task
from cold_start_data.sources.shapes import counting_task
from cold_start_data.teachers import ModelTeacher
from keye_protocol.chat import Mode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from rollout.hf_engine import TransformersEngine

    return TransformersEngine.from_pretrained(tiny_model_dir)


def test_rejection_sampling_with_a_real_engine(engine):
    teacher = ModelTeacher(engine, samples=2, max_tokens=12, temperature=1.0)
    items = [(addition_task(37, 45), Mode.NO_THINK, None), (counting_task(random.Random(0)), Mode.THINK, None)]
    results = teacher.write(items)
    assert [r.sampled for r in results] == [2, 2]
    for result in results:  # an untrained model: whatever it wrote was checked, and nothing unverified kept
        assert (result.candidate is None) == (result.verified == 0)
        assert result.candidate is not None or result.reason == "no verified path among 2"


def test_a_build_whose_teacher_verifies_nothing_fails_with_the_reason(engine, tmp_path):
    config = BuildConfig(size=2, eval_size=0, video_share=0.0, proportions={"think": 1.0}, max_attempts=1,
                         teacher={"kind": "model", "model_dir": "unused", "samples": 1, "max_tokens": 8})
    with pytest.raises(BuildError, match="no verified path among 1"):
        build(config, tmp_path / "out", engine=engine)


def test_posttrain_loads_the_teachers_model_and_cold_start_data_never_does(tiny_model_dir):
    from posttrain.stages.cold_start import teacher_engine
    from rollout.hf_engine import TransformersEngine

    config = BuildConfig(size=2, teacher={"kind": "model", "model_dir": str(tiny_model_dir)})
    with pytest.raises(ValueError, match="teacher.kind 'model' needs a rollout engine loaded from "):
        make_teachers(config)
    assert isinstance(teacher_engine(config), TransformersEngine)
    assert teacher_engine(BuildConfig(size=2)) is None  # the solver teacher loads nothing

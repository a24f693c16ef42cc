"""Loading rewards in all three plug-in forms from a file path, by module path and by name; clear errors."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest

from rewards import RewardSpecError, Sample, load_reward, validate_reward
from rewards.combine import combine
from rewards.result import InvalidReward, normalize

FORMS = Path(__file__).parent / "plugins" / "forms.py"


def rows() -> list[Sample]:
    return [
        Sample.from_row({"prompt": [{"role": "user", "content": "2+2? /think"}], "solution": "4",
                         "completion": "<think>2+2</think><answer>4</answer>", "data_source": "gsm8k",
                         "extra_info": {"bonus": 0.5}}),
        Sample.from_row({"prompt": "2+3?", "completion": "5", "solution": "5", "data_source": "math"}),
        Sample.from_row({"prompt": "2+3?", "completion": "6", "solution": None}),
    ]


def test_native_form_from_a_file_path():
    reward = load_reward(f"{FORMS}:native")
    assert (reward.form, reward.name) == ("native", "test_native_length")
    out = reward(rows())
    assert out[0] == {"length": 36.0, "has_think": 1.0}  # <think>7 + 3 + </think>8 + <answer>8 + 1 + </answer>9
    assert out[1] == {"length": 1.0, "has_think": 0.0}


def test_trl_form_gets_prompts_completions_and_every_column():
    reward = load_reward(f"{FORMS}:trl_exact")
    assert reward.form == "trl"
    # row 0 is conversational: its completion arrives as [{"role": "assistant", ...}] and is not "4" exactly
    assert reward(rows()) == [0.0, 1.0, None]
    assert load_reward(f"{FORMS}:trl_text_only")(rows()[1:]) == [1.0, 1.0]


def test_async_trl_form():
    reward = load_reward(f"{FORMS}:trl_async")
    assert reward.form == "trl"
    assert reward(rows()) == [0.5, 0.5, 0.5]


def test_verl_form_maps_data_source_solution_ground_truth_and_extra_info():
    reward = load_reward(f"{FORMS}:compute_score")
    assert reward.form == "verl"
    out = reward(rows()[:2])
    assert out[0] == {"score": 1.5, "source_is_gsm8k": 1.0}   # "4" in solution_str, + bonus from extra_info
    assert normalize(out[0], "verl") == (1.5, {"source_is_gsm8k": 1.0})
    assert out[1] == {"score": 1.0, "source_is_gsm8k": 0.0}


def test_relative_path_module_path_and_registered_name():
    assert load_reward("tests/rewards/plugins/forms.py:compute_score").form == "verl"
    assert load_reward("rewards.math_answer:math_reward").fn.__name__ == "math_reward"
    assert load_reward("math").name == "math"


def test_loading_the_same_file_twice_keeps_one_registration():
    load_reward(f"{FORMS}:native")
    load_reward(f"{FORMS}:native")
    assert load_reward("test_native_length").form == "native"


@pytest.mark.parametrize(("spec", "message"), [
    ("tests/rewards/plugins/missing.py:f", "does not exist"),
    (f"{FORMS}:nope", "has no attribute 'nope'"),
    (f"{FORMS}:NOT_CALLABLE", "not a function"),
    (f"{FORMS}:two_required", "fits no reward form"),
    (f"{FORMS}:no_args", "fits no reward form"),
    ("rewards.not_a_module:f", "cannot import module"),
    ("not_registered", "not a registered reward"),
    (str(FORMS), "names a file but no function"),
])
def test_bad_specs_fail_at_load_time_naming_the_spec(spec, message):
    with pytest.raises(RewardSpecError, match=message) as error:
        load_reward(spec)
    assert spec in str(error.value)
    with pytest.raises(RewardSpecError):
        validate_reward(spec)


def test_options_are_bound_and_checked():
    sample = Sample(prompt="x", completion="x", completion_ids=list(range(90)))
    assert load_reward("overlong", max_length=100, cache_length=20)([sample]) == [-0.5]
    with pytest.raises(RewardSpecError, match=r"does not take the options \['bogus'\]"):
        load_reward("overlong", bogus=1)
    with pytest.raises(RewardSpecError, match="does not take the options"):
        validate_reward("reward_model", bogus=1)
    assert validate_reward("reward_model", model="some/dir") == "factory"  # not built: no model is loaded


def test_weighted_combination_logs_every_component():
    reward = combine({"math": 1.0, "format": 0.5, f"{FORMS}:native": 0.0})
    sample = Sample(prompt="2+2? /think", completion="<think>2+2</think><answer>\\boxed{4}</answer>",
                    ground_truth="4")
    [row] = reward([sample])
    total, components = row.total, row.components
    assert total == 1.5 and row.error is None
    # the native component's own total is the sum of its parts: length 7+3+8+8+9+9 = 44, plus has_think 1
    assert components == {"math": 1.0, "format": 1.0, "test_native_length": 45.0, "test_native_length/length": 44.0,
                          "test_native_length/has_think": 1.0}
    assert load_reward({"math": 1.0}).form == "native_batched"


def test_a_component_keeps_its_own_options_in_a_combination():
    sample = Sample(prompt="x", completion="y", completion_ids=list(range(12)))
    # 12 tokens against a limit of 10 with a 4-token ramp: the penalty is -(12 - 6) / 4 = -1.0 (clipped)
    reward = combine({"format": 0.0, "overlong": {"weight": 2.0, "options": {"max_length": 10, "cache_length": 4}}})
    [row] = reward([sample])
    assert row.components["overlong"] == -1.0 and row.total == -2.0
    [default] = combine({"overlong": 1.0})([sample])  # the defaults (4096 tokens): no penalty
    assert default.components["overlong"] == 0.0
    with pytest.raises(RewardSpecError, match="unknown keys \\['wieght'\\]"):
        combine({"overlong": {"wieght": 1.0}})
    # a recipe's validation checks each component's own options, without building factories
    assert validate_reward({"math": 1.0, "reward_model": {"weight": 0.5, "options": {"model": "dir"}}}) == \
        "native_batched"
    with pytest.raises(RewardSpecError, match="does not take the options \\['max_len'\\]"):
        validate_reward({"overlong": {"weight": 1.0, "options": {"max_len": 3}}})


def test_combination_names_the_failing_component_and_keeps_the_others():
    reward = combine({"math": 1.0, "format": 1.0})
    [row] = reward([Sample(prompt="x", completion="4")])  # no ground truth: the math reward raises
    assert row.error == "exception" and "component 'math'" in row.message and set(row.component_errors) == {"math"}
    [alone] = combine({"format": 1.0})([Sample(prompt="x", completion="4")])
    assert (row.total, row.components) == (alone.total, alone.components)  # format's credit, math adds nothing


@pytest.mark.parametrize("raw", [math.nan, math.inf, "1.0", [1.0], {"a": math.nan}, {}])
def test_invalid_values_are_rejected_with_the_spec(raw):
    with pytest.raises(InvalidReward, match="myreward"):
        normalize(raw, "myreward")


def test_valid_values():
    assert normalize(True, "r") == (1.0, {})
    assert normalize(None, "r") == (None, {})
    assert normalize({"a": None}, "r") == (None, {})
    assert normalize({"a": 1, "b": 2}, "r") == (3.0, {"a": 1.0, "b": 2.0})


def test_sample_parts_columns_and_pickling():
    sample = Sample.from_row({"prompt": "What? /auto_think", "completion": "<analysis>easy</analysis><answer>"
                              "\\boxed{7}</answer>", "answer": "7", "difficulty": 3}, group_index=2, group_size=8)
    assert sample.mode.value == "auto_think"
    assert (sample.analysis, sample.answer, sample.boxed) == ("easy", "\\boxed{7}", "7")
    assert sample.ground_truth == "7" and sample.columns["difficulty"] == 3
    assert (sample.group_index, sample.group_size) == (2, 8)
    copy = pickle.loads(pickle.dumps(sample))
    assert copy.boxed == "7" and copy.columns == sample.columns
    verl_row = Sample.from_row({"prompt": "q", "completion": "c", "reward_model": {"ground_truth": "9"}})
    assert verl_row.ground_truth == "9"
    with pytest.raises(ValueError, match="'prompt' and 'completion'"):
        Sample.from_row({"question": "q"})

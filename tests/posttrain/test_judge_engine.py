"""Judges on a model (`posttrain.judge_engine`): the recipe's judge names map to the engine-backed factories, which
generate through the rollout engine exactly as the engine does, keep the judges' names, and refuse options neither
they nor the judge take."""

from __future__ import annotations

import pytest

from posttrain.judge_engine import engine_backed, engine_generate, judge_engine
from rewards import RewardSpecError, load_reward, validate_reward
from rewards.sample import Sample

THINKING = Sample(prompt="What is 2+2? /think", completion="<think>2+2=4</think><answer>\\boxed{4}</answer>")


def test_judge_specs_map_to_the_engine_backed_factories_and_nothing_else():
    assert engine_backed("outcome_judge", {"model": "m"}) == "posttrain.judge_engine:outcome_judge"
    assert engine_backed("consistency_judge") == "posttrain.judge_engine:consistency_judge"
    assert engine_backed("consistency_judge", {"generate": len}) == "consistency_judge"  # its own generator
    assert engine_backed("math", {"model": "m"}) == "math"
    assert engine_backed({"math": 1.0, "outcome_judge": {"weight": 0.5, "options": {"model": "m"}}}) == \
        {"math": 1.0, "posttrain.judge_engine:outcome_judge": {"weight": 0.5, "options": {"model": "m"}}}


def test_unknown_or_missing_judge_options_are_refused_naming_them():
    spec = engine_backed("outcome_judge")
    with pytest.raises(RewardSpecError, match=r"does not take the options \['beam', 'temperature'\]; it takes "
                                              r"\['device', 'engine', 'engine_options', 'max_new_tokens', 'mode', "
                                              r"'model', 'scale', 'template', 'tokenizer'\]"):
        validate_reward(spec, model="m", beam=2, temperature=0.7)
    with pytest.raises(RewardSpecError, match=r"needs the options \['model'\]"):
        validate_reward(spec)
    assert validate_reward(spec, model="m", max_new_tokens=8) == "factory"  # validating loads no model


def test_judge_generates_through_the_rollout_engine(tiny_tokenizer, llama_dir):
    import torch
    import transformers

    from rollout.types import GenerationRequest, SamplingParams

    engine = judge_engine(str(llama_dir), engine="transformers")
    prompts = ["Does 2+2=4 support 4?", "short"]
    texts = engine_generate(engine, max_new_tokens=4)(prompts)
    direct = engine.generate([GenerationRequest(f"r{i}", [{"role": "user", "content": p}]) for i, p in
                              enumerate(prompts)], SamplingParams(temperature=0.0, max_tokens=4))
    assert texts == [c.text for c in direct]  # greedy: the judge reads exactly what the engine generates
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(
        vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, pad_token_id=tiny_tokenizer.pad_token_id)).eval()
    options = {"model": model, "tokenizer": tiny_tokenizer, "engine": "compact", "max_new_tokens": 4}
    judge = load_reward(engine_backed("consistency_judge", options), **options)
    assert judge.name == "consistency_judge"  # logged under the recipe's name, not the factory's path
    try:  # a random model rarely writes a score: either a score in [0, 1] or a recorded parse failure
        score = judge([THINKING])[0]
        assert 0.0 <= score <= 1.0
    except ValueError as error:
        assert "no score" in str(error)


def test_a_gpu_judge_needs_an_engine_that_runs_there(llama_dir):
    with pytest.raises(ValueError, match=r"the 'transformers' rollout engine generates on CPU; a GPU judge runs "
                                         r"`engine: vllm`"):
        load_reward(engine_backed("outcome_judge"), model=str(llama_dir), device="cuda")
    with pytest.raises(TypeError, match=r"does not accept option\(s\) \['beam_width'\]"):
        judge_engine(str(llama_dir), engine_options={"beam_width": 2})

"""The compact engine against the transformers engine (the reference), and the work it must not do.

tests/rollout/test_hf_engine.py runs every engine test on both engines; here: mixed-length batches where rows
finish at different steps, each option switched off against the default, and what the model is asked to compute.
"""

import itertools

import pytest
import torch

from rollout.compact_engine import CompactEngine
from rollout.engines import build_engine
from rollout.hf_engine import TransformersEngine
from rollout.types import GenerationRequest, SamplingParams

REQUESTS = [GenerationRequest(f"q{i}", [{"role": "user", "content": f"What is {i} + {3 * i}?" + " Explain." * i}], mode)
            for i, mode in enumerate(["think", "no_think", "think"])]
OPTIONS = ("share_prefill", "drop_finished", "preallocate")


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return TransformersEngine.from_pretrained(tiny_model_dir)


def compact(reference, **options) -> CompactEngine:
    return CompactEngine(reference.model, reference.encoder.processor_or_tokenizer, **options)


def every_variant(reference):
    for values in itertools.product([True, False], repeat=len(OPTIONS)):
        yield dict(zip(OPTIONS, values)), compact(reference, **dict(zip(OPTIONS, values)))


def stop_mid_row(reference, sampling: SamplingParams) -> SamplingParams:
    """Stop on a token the first row writes mid-way, so rows end at different steps (a random model rarely
    writes its end-of-turn token)."""
    first = reference.generate(REQUESTS[:1], sampling.model_copy(update={"n": 1}))[0].token_ids
    return sampling.model_copy(update={"stop_token_ids": [first[len(first) // 2]]})


def test_greedy_equals_generate_when_rows_finish_at_different_steps(reference):
    sampling = stop_mid_row(reference, SamplingParams(n=2, temperature=0, max_tokens=20))
    expected = reference.generate(REQUESTS, sampling)
    assert len({len(c.token_ids) for c in expected}) > 1, "the batch must mix lengths to test compaction"
    for options, engine in every_variant(reference):
        got = engine.generate(REQUESTS, sampling)
        assert [c.token_ids for c in got] == [c.token_ids for c in expected], options
        assert [c.finish_reason for c in got] == [c.finish_reason for c in expected], options
        for a, b in zip(got, expected):
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=1e-5)


def test_a_sample_is_the_same_whether_rows_finish_early_or_share_a_prefill(reference):
    sampling = SamplingParams(n=4, temperature=1.0, top_p=0.9, top_k=50, max_tokens=24, seed=3)
    sampling = stop_mid_row(reference, sampling)
    runs = {tuple(options.values()): engine.generate(REQUESTS, sampling) for options, engine in every_variant(reference)}
    default = runs[(True, True, False)]  # the defaults
    assert len({len(c.token_ids) for c in default}) > 2 and len({tuple(c.token_ids) for c in default}) == 12
    for key, completions in runs.items():
        assert [c.token_ids for c in completions] == [c.token_ids for c in default], key


def test_each_prompt_is_prefilled_once_and_finished_rows_leave_the_batch(reference):
    engine = compact(reference)
    sampling = stop_mid_row(reference, SamplingParams(n=4, temperature=1.0, max_tokens=16, seed=0))
    rows_per_call = []
    forward = engine.model.forward
    engine.model.forward = lambda *a, **kw: rows_per_call.append(kw["input_ids"].shape) or forward(*a, **kw)
    try:
        out = engine.generate(REQUESTS, sampling)
    finally:
        del engine.model.forward
    prefill, *decode = rows_per_call
    assert prefill[0] == len(REQUESTS)  # three prompts, not twelve rows
    assert [shape[1] for shape in decode] == [1] * len(decode)
    # a decode step runs only the rows still going: as many row-steps as tokens written after the first
    assert sum(shape[0] for shape in decode) == sum(len(c.token_ids) - 1 for c in out)
    assert sum(shape[0] for shape in decode) < len(out) * len(decode)


def test_the_recipe_name_builds_it_with_its_options_and_refuses_others(tiny_model_dir):
    engine = build_engine("compact", tiny_model_dir, max_batch_size=8, drop_finished=False)
    assert isinstance(engine, CompactEngine) and engine.max_batch_size == 8 and not engine.drop_finished
    with pytest.raises(TypeError, match=r"does not accept option\(s\) \['gpu_memory_utilization'\]"):
        build_engine("compact", tiny_model_dir, gpu_memory_utilization=0.5)


@pytest.mark.slow  # torch.compile of the decode forward: ~40 s on two cores
def test_a_compiled_decode_step_writes_what_the_eager_one_does_and_follows_new_weights(tiny_model_dir):
    eager = TransformersEngine.from_pretrained(tiny_model_dir)
    compiled = CompactEngine.from_pretrained(tiny_model_dir, compile_decode=True)
    sampling = stop_mid_row(eager, SamplingParams(n=3, temperature=1.0, max_tokens=16, seed=1))
    for engine_sampling in (sampling, sampling.model_copy(update={"temperature": 0.0})):
        expected = compact(eager).generate(REQUESTS, engine_sampling)
        got = compiled.generate(REQUESTS, engine_sampling)
        assert [c.token_ids for c in got] == [c.token_ids for c in expected]
        for a, b in zip(got, expected):
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=1e-4)
    # the compiled step reads the parameters it is given after compiling, copied in or pointed at
    perturbed = {name: p.detach() + 0.05 * torch.randn_like(p) for name, p in eager.model.named_parameters()}
    eager.load_weights(1, perturbed)
    compiled.share_weights(1, {name: t.clone() for name, t in perturbed.items()})
    greedy = sampling.model_copy(update={"temperature": 0.0})
    assert ([c.token_ids for c in compiled.generate(REQUESTS, greedy)]
            == [c.token_ids for c in compact(eager).generate(REQUESTS, greedy)])

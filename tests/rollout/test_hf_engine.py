import numpy as np
import pytest
import torch
from PIL import Image

from rollout.compact_engine import CompactEngine
from rollout.hf_engine import TransformersEngine
from rollout.types import GenerationRequest, SamplingParams


@pytest.fixture(scope="module", params=[TransformersEngine, CompactEngine], ids=["transformers", "compact"])
def engine(request, tiny_model_dir):
    """Every test here runs on both CPU engines: the compact one must behave as the reference does."""
    return request.param.from_pretrained(tiny_model_dir)


def ask(request_id, text, mode="think", image=None, video=None):
    content = []
    if image is not None:
        content.append({"type": "image", "image": image})
    if video is not None:
        content.append({"type": "video", "video": video, "fps": 2})
    content.append({"type": "text", "text": text})
    return GenerationRequest(request_id, [{"role": "user", "content": content}], mode)


REQUESTS = [ask("text", "What is 2 + 3?"), ask("image", "Color?", "no_think", image=Image.new("RGB", (84, 56), "red"))]


def test_greedy_output_equals_model_generate(engine):
    completions = engine.generate(REQUESTS, SamplingParams(temperature=0, max_tokens=10))
    for request, completion in zip(REQUESTS, completions):
        prompt = engine.encoder.encode(request)
        with torch.no_grad():
            expected = engine.model.generate(input_ids=torch.tensor([prompt.input_ids]), **prompt.vision,
                                             max_new_tokens=10, do_sample=False,
                                             eos_token_id=engine.encoder.eos_ids)[0, len(prompt):]
        assert completion.token_ids == expected.tolist()
        assert completion.prompt_ids == prompt.input_ids


def test_sampler_logprobs_match_a_recomputed_forward(engine):
    sampling = SamplingParams(n=3, temperature=0.7, max_tokens=8, seed=1)
    for completion, request in zip(engine.generate(REQUESTS, sampling), [r for r in REQUESTS for _ in range(3)]):
        prompt = engine.encoder.encode(request)
        ids = torch.tensor([prompt.input_ids + completion.token_ids])
        with torch.no_grad():
            logits = engine.model(input_ids=ids, **prompt.vision).logits[0, len(prompt) - 1:-1] / 0.7
        expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(completion.token_ids)[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(completion.logprobs), expected, atol=1e-4, rtol=1e-4)


def test_n_samples_per_request_in_order_and_seeded(engine):
    sampling = SamplingParams(n=4, temperature=1.0, max_tokens=6, seed=7)
    first = engine.generate(REQUESTS, sampling)
    assert [(c.request_id, c.sample_index) for c in first] == [(r.request_id, k) for r in REQUESTS for k in range(4)]
    assert len({tuple(c.token_ids) for c in first[:4]}) > 1  # sampling differs across samples
    assert [c.token_ids for c in engine.generate(REQUESTS, sampling)] == [c.token_ids for c in first]


def test_video_prompt(engine):
    frames = np.random.default_rng(0).integers(0, 255, (6, 56, 56, 3), dtype=np.uint8)
    [completion] = engine.generate([ask("video", "What moves?", video=frames)], SamplingParams(max_tokens=4))
    assert completion.finish_reason == "length" and len(completion.token_ids) == 4


def test_stop_strings_and_finish_reasons(engine):
    greedy = SamplingParams(temperature=0, max_tokens=12)
    [free] = engine.generate(REQUESTS[:1], greedy)
    stop = engine.tokenizer.decode(free.token_ids[2:4])
    [stopped] = engine.generate(REQUESTS[:1], greedy.model_copy(update={"stop": [stop]}))
    assert stopped.finish_reason == "stop" and stop in stopped.text
    assert len(stopped.token_ids) < len(free.token_ids)
    [by_token] = engine.generate(REQUESTS[:1], greedy.model_copy(update={"stop_token_ids": [free.token_ids[1]]}))
    assert by_token.token_ids == free.token_ids[:2] and by_token.finish_reason == "stop"


def test_a_bad_request_fails_alone(engine):
    bad = ask("tiny-image", "?", image=Image.new("RGB", (5, 60)))
    too_long = ask("too-long", "9 " * 9000)
    out = engine.generate([REQUESTS[0], bad, too_long], SamplingParams(n=2, max_tokens=4))
    assert [c.finish_reason for c in out] == ["length", "length", "error", "error", "error", "error"]
    assert "shorter side must be at least 28 px" in out[2].error
    assert "the model's context is 8192" in out[4].error


def test_load_weights_changes_output_and_records_version(engine):
    original = {n: p.detach().clone() for n, p in engine.model.named_parameters()}
    try:
        before = engine.generate(REQUESTS[:1], SamplingParams(temperature=0, max_tokens=6))[0]
        engine.load_weights(5, {"lm_head.weight": torch.randn_like(original["lm_head.weight"])})
        after = engine.generate(REQUESTS[:1], SamplingParams(temperature=0, max_tokens=6))[0]
        assert after.weight_version == 5 and after.token_ids != before.token_ids
        with pytest.raises(ValueError, match="unknown parameter 'nope'"):
            engine.load_weights(6, {"nope": torch.zeros(1)})
        with pytest.raises(ValueError, match="shape"):
            engine.load_weights(6, {"lm_head.weight": torch.zeros(2, 2)})
    finally:
        engine.load_weights(0, original)


def test_text_leaves_out_the_closing_end_of_turn_token(engine):
    im_end = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = engine.encoder.text_ids("<think>1+1=2.</think><answer>\\boxed{2}</answer>") + [im_end]
    assert engine.encoder.completion_text(ids) == "<think>1+1=2.</think><answer>\\boxed{2}</answer>"
    assert engine.encoder.completion_text(ids[:-1] + [im_end, 5]).count("<|im_end|>") == 1  # only a final one


def test_rollouts_never_write_vision_placeholders(engine):
    vision = set(engine.encoder.vision_ids)
    out = engine.generate(REQUESTS, SamplingParams(n=4, temperature=2.0, top_p=1.0, top_k=0, max_tokens=64, seed=3))
    assert vision and not any(vision & set(c.token_ids) for c in out)

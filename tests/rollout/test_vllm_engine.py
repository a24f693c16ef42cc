"""The vLLM engine's logic against a stand-in of `vllm.LLM` that enforces vLLM's rules (runs without vLLM).

The stand-in refuses what real vLLM 0.32 refuses or silently gets wrong: constructor and sampling options it does
not have, `collective_rpc` arguments that msgpack cannot encode in multiprocess mode, a whole model handed over
as a list, generating during an open weight update or before the prefix cache is reset after one, and image
counts that do not match the placeholders. The real engine runs in `test_vllm_engine_real.py`.
"""

import sys
import threading
import types
from dataclasses import dataclass

import msgpack
import pytest
import torch
from PIL import Image

from rollout.types import GenerationRequest, SamplingParams
from rollout.weight_sync import BroadcastGroup, tensor_metas

FENCE = "```"


class FakeSamplingParams:
    FIELDS = {"n", "temperature", "top_p", "top_k", "max_tokens", "seed", "logprobs", "prompt_logprobs", "stop",
              "include_stop_str_in_output", "stop_token_ids", "logit_bias"}

    def __init__(self, **kwargs):
        unknown = set(kwargs) - self.FIELDS
        if unknown:
            raise TypeError(f"SamplingParams got unexpected keyword arguments {sorted(unknown)}")
        self.__dict__.update({"n": 1, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_tokens": 16, "seed": None,
                              "logprobs": None, "stop": None, "stop_token_ids": None, "logit_bias": None}, **kwargs)
        assert self.n >= 1 and self.temperature >= 0 and 0 < self.top_p <= 1 and self.top_k >= -1
        assert self.max_tokens >= 1
        assert all(-100 <= b <= 100 for b in (self.logit_bias or {}).values()), "vLLM clamps biases to +-100"


@dataclass
class Sample:
    token_ids: list
    logprobs: list
    finish_reason: str
    stop_reason: object = None


@dataclass
class Output:
    prompt_token_ids: list
    outputs: list


class FakeLLM:
    KNOWN = {"model", "gpu_memory_utilization", "dtype", "max_model_len", "enable_sleep_mode", "enforce_eager",
             "seed", "logprobs_mode", "worker_extension_cls"}
    last = None

    def __init__(self, **kwargs):
        import importlib
        import os

        assert set(kwargs) <= self.KNOWN, set(kwargs) - self.KNOWN
        assert kwargs["logprobs_mode"] in ("raw_logprobs", "raw_logits", "processed_logprobs", "processed_logits")
        module, _, name = kwargs["worker_extension_cls"].rpartition(".")
        self.extension = getattr(importlib.import_module(module), name)
        self.multiprocess = os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"
        self.kwargs, self.weights, self.calls, self.generated, self.seeds = kwargs, {}, [], [], []
        self.session, self.stale_prefix, self.stale_mm, self.stale_encoder = False, False, False, False
        self.script: list[tuple[list[int], str, object]] = []  # (ids, finish_reason, stop_reason) per sample
        self.pads_per_image = 4
        self.llm_engine = types.SimpleNamespace(
            model_config=types.SimpleNamespace(  # vLLM resolves dtype to a torch.dtype ("auto": the checkpoint's)
                max_model_len=kwargs["max_model_len"] or 256,
                dtype=torch.float32 if kwargs["dtype"] == "auto" else getattr(torch, kwargs["dtype"])),
            reset_encoder_cache=lambda: setattr(self, "stale_encoder", False))
        FakeLLM.last = self

    # ---------------------------------------------------------------------------------- weight updates
    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        if not hasattr(self.extension, method):
            raise AttributeError(f"worker has no method {method}")
        if self.multiprocess:
            msgpack.packb([list(args), kwargs or {}])  # raises TypeError, as vLLM's msgpack encoder would
        self.calls.append(method)
        return [getattr(self, "_" + method)(*args, **(kwargs or {}))]

    def _posttrain_begin_update(self):
        assert not self.session, "update already open"
        self.session = True

    def _posttrain_load_chunk(self, weights):
        assert self.session, "load outside an update session"
        assert not isinstance(weights, (list, tuple, dict)), "weights must stream (an iterator), not a list"
        count = 0
        for name, tensor in weights:
            self.weights[name] = tensor.clone()
            count += 1
        return count

    def _posttrain_load_file(self, path):
        from safetensors.torch import load_file

        return self._posttrain_load_chunk(iter(load_file(path).items()))

    def _posttrain_reseed(self, seed):
        assert isinstance(seed, int)
        self.seeds.append(seed)

    def _posttrain_finish_update(self):
        assert self.session
        self.session, self.stale_prefix, self.stale_mm, self.stale_encoder = False, True, True, True
        self.discarded = False

    def reset_prefix_cache(self, reset_running_requests=False, reset_connector=False):
        self.stale_prefix = False
        return True

    def reset_mm_cache(self):
        self.stale_mm = False

    # ---------------------------------------------------------------------------------- sleep mode
    def sleep(self, level=1):
        assert self.kwargs["enable_sleep_mode"], "vLLM raises: sleep mode is not enabled"
        assert level in (1, 2) and not self.session
        self.asleep = True
        self.discarded = level == 2  # level 2 frees the weights; they are garbage after wake_up until reloaded

    def wake_up(self, tags=None):
        self.asleep = False

    # ---------------------------------------------------------------------------------- generation
    def generate(self, prompts, params, use_tqdm=True):
        if getattr(self, "asleep", False):
            raise RuntimeError("generate while asleep: the weights are off the GPU")
        if getattr(self, "discarded", False):
            raise RuntimeError("generate after sleep(level=2) without loading weights: they are garbage")
        if self.session:
            raise RuntimeError("generate while a weight update is open: half the layers are on the meta device")
        if self.stale_prefix or self.stale_mm or self.stale_encoder:
            raise RuntimeError("generate after a weight load without resetting the prefix/multimodal caches")
        params = params if isinstance(params, list) else [params] * len(prompts)
        assert len(params) == len(prompts) and all(isinstance(p, FakeSamplingParams) for p in params)
        self.generated.append((prompts, params))
        return [self._output(prompt, p) for prompt, p in zip(prompts, params)]

    def _output(self, prompt, params):
        ids = self._expand(prompt)
        samples = []
        for _ in range(params.n):
            tokens, reason, stop = self.script.pop(0) if self.script else ([5, 6, 7], "length", None)
            tokens = tokens[: params.max_tokens]
            samples.append(Sample(tokens, [{t: types.SimpleNamespace(logprob=-0.25)} for t in tokens], reason, stop))
        return Output(ids, samples)

    def _expand(self, prompt):
        """vLLM's placeholder expansion: every image pad token becomes `pads_per_image` of them."""
        ids, pad = prompt["prompt_token_ids"], self.image_pad
        images = prompt.get("multi_modal_data", {}).get("image", [])
        assert ids.count(pad) == len(images), "one placeholder per image"
        assert all(isinstance(image, Image.Image) for image in images)
        return [t for token in ids for t in ([token] * self.pads_per_image if token == pad else [token])]


@pytest.fixture()
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = FakeLLM, FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "")
    return module


@pytest.fixture()
def text_dir(tmp_path, tiny_tokenizer):
    tiny_tokenizer.save_pretrained(tmp_path)
    return tmp_path


def make_engine(path, **kwargs):
    from rollout.vllm_engine import VLLMEngine

    engine = VLLMEngine(path, max_model_len=256, **kwargs)
    engine.llm.image_pad = engine.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    return engine, engine.llm


def requests(k=2):
    return [GenerationRequest(str(i), [{"role": "user", "content": f"What is {i} + 1?"}], "think") for i in range(k)]


RL = SamplingParams(n=2, temperature=1.0, top_p=0.9, top_k=20, max_tokens=8, seed=11)


def test_unknown_options_are_refused_by_name(text_dir, fake_vllm):
    from rollout.vllm_engine import VLLMEngine

    with pytest.raises(TypeError, match="tensor_parallel_size"):
        VLLMEngine(text_dir, tensor_parallel_size=2)
    with pytest.raises(TypeError, match="swap_space"):
        VLLMEngine.from_pretrained(text_dir, swap_space=4)


def test_generate_asks_vllm_for_what_the_transformers_engine_does(text_dir, fake_vllm):
    engine, llm = make_engine(text_dir)
    assert llm.kwargs["logprobs_mode"] == "raw_logprobs"
    llm.script = [([40, 41, engine.encoder.eos_ids[0]], "stop", engine.encoder.eos_ids[0]), ([42] * 8, "length", None)] * 2
    completions = engine.generate(requests(), RL)
    [(prompts, params)] = llm.generated
    # seeded once per call, not per request (vLLM samples seeded requests one by one: module docstring)
    assert llm.seeds == [11] and [p.seed for p in params] == [None, None]
    assert all(p.logprobs == 0 and p.top_k == 20 and p.top_p == 0.9 for p in params)
    assert set(params[0].logit_bias) == set(engine.encoder.vision_ids) and set(params[0].logit_bias.values()) == {-100}
    assert set(engine.encoder.eos_ids) <= set(params[0].stop_token_ids)
    assert prompts[0]["prompt_token_ids"] == engine.encoder.encode(requests()[0]).input_ids
    first, second = completions[:2]
    assert (first.token_ids, first.finish_reason, first.logprobs) == ([40, 41, engine.encoder.eos_ids[0]], "stop",
                                                                      [-0.25] * 3)
    assert first.text == engine.tokenizer.decode([40, 41])  # the closing eos is not in the text
    assert second.finish_reason == "length" and len(second.token_ids) == 8
    assert [(c.request_id, c.sample_index, c.weight_version) for c in completions] == [
        ("0", 0, 0), ("0", 1, 0), ("1", 0, 0), ("1", 1, 0)]


def test_temperatures_other_than_one_are_refused(text_dir, fake_vllm):
    engine, llm = make_engine(text_dir)
    with pytest.raises(ValueError, match="temperature 0.6"):
        engine.generate(requests(), SamplingParams(temperature=0.6, top_k=0, top_p=1.0))
    greedy = engine.generate(requests(), SamplingParams(temperature=0.0))
    assert len(greedy) == 2 and llm.generated[0][1][0].top_k == 0 and llm.generated[0][1][0].top_p == 1.0


def buckets_of(state, size=2):
    names = list(state)
    return [{n: state[n] for n in names[i:i + size]} for i in range(0, len(names), size)]


STATE = {f"model.layers.0.self_attn.{p}_proj.weight": torch.full((2, 2), float(i)) for i, p in enumerate("qkvo")}


def test_buckets_of_one_version_share_one_session_closed_before_generating(text_dir, fake_vllm):
    engine, llm = make_engine(text_dir)
    assert sum(engine.load_weights(3, bucket) for bucket in buckets_of(STATE)) == 4
    assert llm.calls == ["posttrain_begin_update", "posttrain_load_chunk", "posttrain_load_chunk"]
    assert llm.session and engine.weight_version == 3  # still open: a later bucket may finish a fused layer
    completions = engine.generate(requests(1), RL)
    assert llm.calls[-2:] == ["posttrain_finish_update", "posttrain_reseed"]
    assert not (llm.stale_prefix or llm.stale_mm or llm.stale_encoder)
    assert {c.weight_version for c in completions} == {3}
    assert all(torch.equal(llm.weights[n], t) for n, t in STATE.items())


def test_broadcast_buckets_stream_into_one_session_in_the_dtype_vllm_resolved(text_dir, fake_vllm):
    """A worker of `rollout.weight_sync: broadcast` hands the engine each received bucket (views of its buffer) in
    the dtype the engine reports, which the learner casts to before sending (gloo, the sender in a thread)."""
    from posttrain.learners.engine_setup import free_port

    engine, llm = make_engine(text_dir, dtype="bfloat16")
    assert engine.weight_dtype() == torch.bfloat16
    sent = [[(n, STATE[n].to(engine.weight_dtype())) for n in bucket] for bucket in buckets_of(STATE)]
    port = free_port()

    def send():
        group = BroadcastGroup("127.0.0.1", port, 0, 2)
        for bucket in sent:
            group.send_bucket(bucket)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    group = BroadcastGroup("127.0.0.1", port, 1, 2)
    assert sum(engine.load_weights(5, group.receive_bucket(tensor_metas(b))) for b in sent) == 4
    sender.join(timeout=60)
    assert llm.calls == ["posttrain_begin_update", "posttrain_load_chunk", "posttrain_load_chunk"]
    assert all(llm.weights[n].dtype == torch.bfloat16 and torch.equal(llm.weights[n].float(), t)
               for n, t in STATE.items())


def test_a_new_version_closes_the_previous_update(text_dir, fake_vllm):
    engine, llm = make_engine(text_dir)
    engine.load_weights(1, STATE)
    engine.load_weights(2, iter(STATE.items()))
    assert llm.calls == ["posttrain_begin_update", "posttrain_load_chunk", "posttrain_finish_update",
                         "posttrain_begin_update", "posttrain_load_chunk"]


def test_the_stand_in_refuses_what_vllm_refuses(text_dir, fake_vllm):
    engine, llm = make_engine(text_dir)
    engine.load_weights(1, STATE)
    with pytest.raises(AssertionError, match="stream"):
        llm.collective_rpc("posttrain_load_chunk", args=(list(STATE.items()),))
    llm._posttrain_finish_update()
    llm.session = False
    with pytest.raises(RuntimeError, match="without resetting"):
        llm.generate([{"prompt_token_ids": [1, 2]}], FakeSamplingParams())
    llm.multiprocess = True
    with pytest.raises(TypeError):
        llm.collective_rpc("posttrain_load_chunk", args=(iter(STATE.items()),))


def test_multiprocess_mode_sends_only_paths_and_keeps_bf16(text_dir, fake_vllm, monkeypatch):
    import os

    engine, llm = make_engine(text_dir, multiprocessing=True)
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1" and llm.multiprocess
    written = []
    real_remove = os.remove
    monkeypatch.setattr(os, "remove", lambda path: written.append(path) or real_remove(path))
    state = {n: t.to(torch.bfloat16) for n, t in STATE.items()}
    assert engine.load_weights(4, state) == 4
    assert llm.calls == ["posttrain_begin_update", "posttrain_load_file"]
    assert all(llm.weights[n].dtype == torch.bfloat16 and torch.equal(llm.weights[n], t) for n, t in state.items())
    assert written and not any(os.path.exists(p) for p in written)  # each file is removed once loaded


def test_generate_encoded_continues_past_an_opening_fence(text_dir, fake_vllm):
    from rollout.agentic import closes_code_block

    engine, llm = make_engine(text_dir)
    ids = engine.encoder.text_ids
    opening, body = ids("<think>look\n```python"), ids("\nprint(1)\n```")
    llm.script = [(opening, "stop", FENCE), (body, "stop", FENCE)]
    prompt = engine.encoder.encode(requests(1)[0])
    [completion] = engine.generate_encoded([prompt], SamplingParams(temperature=0.0, max_tokens=64, seed=5),
                                           stop_when=closes_code_block)
    assert llm.seeds == [5, 6]  # each round of a seeded call is seeded once
    assert completion.token_ids == opening + body and completion.finish_reason == "stop"
    assert completion.logprobs == [-0.25] * len(opening + body) and completion.loss_mask == [1] * len(opening + body)
    (first, first_params), (second, second_params) = llm.generated
    assert FENCE in first_params[0].stop
    assert second[0]["prompt_token_ids"] == prompt.input_ids + opening  # continues from the sampled ids
    assert second_params[0].max_tokens == 64 - len(opening)


def test_image_placeholders_go_one_per_image_and_come_back_checked(tiny_model_dir, fake_vllm):
    engine, llm = make_engine(tiny_model_dir)
    image = Image.new("RGB", (56, 56), "red")
    request = GenerationRequest("img", [{"role": "user", "content": [{"type": "image", "image": image},
                                                                     {"type": "text", "text": "Color?"}]}], "think")
    expanded = engine.encoder.encode(request).input_ids
    llm.pads_per_image = expanded.count(llm.image_pad)
    [ok] = engine.generate([request], SamplingParams(temperature=0.0, max_tokens=4))
    [(prompts, _)] = llm.generated
    assert prompts[0]["prompt_token_ids"].count(llm.image_pad) == 1 and ok.finish_reason == "length"
    assert ok.prompt_ids == expanded
    llm.pads_per_image += 1  # vLLM's processor sizes the image differently from ours
    [bad] = engine.generate([request], SamplingParams(temperature=0.0, max_tokens=4))
    assert bad.finish_reason == "error" and "placeholder expansion differs" in bad.error


def test_sleep_needs_sleep_mode_and_generation_waits_for_wake_up(text_dir, fake_vllm):
    engine, llm = make_engine(text_dir)
    with pytest.raises(RuntimeError, match="enable_sleep_mode: true"):
        engine.sleep()
    engine, llm = make_engine(text_dir, enable_sleep_mode=True)
    engine.load_weights(1, STATE)
    assert llm.session
    engine.sleep()  # closes the open update first, as vLLM cannot sleep mid-update
    assert llm.asleep and not llm.session and llm.calls[-1] == "posttrain_finish_update"
    with pytest.raises(RuntimeError, match="asleep"):
        llm.generate([], [])
    engine.wake_up()  # level 2: the weights were discarded, the weight sync that follows every wake-up reloads them
    with pytest.raises(RuntimeError, match="sleep\\(level=2\\) without loading weights"):
        engine.generate(requests(1), RL)
    engine.load_weights(2, STATE)
    assert len(engine.generate(requests(1), RL)) == 2

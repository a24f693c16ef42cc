"""The vLLM engine against the transformers engine; runs only where vLLM and a GPU are present."""

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(),
    reason="the vLLM engine needs the `vllm` extra and a CUDA GPU (bench/gpu_check.sh runs this check there)")


def test_greedy_output_and_weight_update_agree_with_transformers(tmp_path, tiny_tokenizer):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from rollout.hf_engine import TransformersEngine
    from rollout.types import GenerationRequest, SamplingParams
    from rollout.vllm_engine import VLLMEngine

    config = Qwen3Config(vocab_size=len(tiny_tokenizer), hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                         eos_token_id=tiny_tokenizer.eos_token_id, pad_token_id=tiny_tokenizer.pad_token_id)
    Qwen3ForCausalLM(config).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    requests = [GenerationRequest(str(i), [{"role": "user", "content": f"What is {i} + 1?"}], "think")
                for i in range(4)]
    greedy = SamplingParams(temperature=0, max_tokens=8)
    hf = TransformersEngine.from_pretrained(tmp_path)
    vllm = VLLMEngine(tmp_path, gpu_memory_utilization=0.2, dtype="float32", enforce_eager=True)
    assert [c.token_ids for c in vllm.generate(requests, greedy)] == [c.token_ids for c in hf.generate(requests, greedy)]
    new = {n: p + 0.01 * torch.randn_like(p) for n, p in hf.model.named_parameters()}
    hf.load_weights(1, new)
    vllm.load_weights(1, new)
    probe = hf.encoder.text_ids("<|im_start|>user\nWhat is 3 + 4?<|im_end|>")
    torch.testing.assert_close(vllm.probe_logprobs(probe), hf.probe_logprobs(probe), atol=1e-3, rtol=1e-3)

#!/usr/bin/env bash
# One short run on a GPU machine (the device tool): vLLM engine generation, in-place weight update, and
# logprob agreement with the transformers engine, on a small text-only Qwen3 built from config.
# Usage (repo root, GPU machine): bash bench/gpu_check.sh
set -euo pipefail
python3 -m venv /tmp/gpuvenv
/tmp/gpuvenv/bin/pip install -q -e ".[vllm]" 2>&1 | tail -3
PYTHONUNBUFFERED=1 /tmp/gpuvenv/bin/python - <<'PY'
import tempfile, torch
from transformers import Qwen3Config, Qwen3ForCausalLM
from keye_vl.tokenizer import build_tiny_tokenizer
from rollout.hf_engine import TransformersEngine
from rollout.vllm_engine import VLLMEngine
from rollout.types import GenerationRequest, SamplingParams

out = tempfile.mkdtemp()
tok = build_tiny_tokenizer()
model = Qwen3ForCausalLM(Qwen3Config(vocab_size=len(tok), hidden_size=256, intermediate_size=512,
                                     num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                     head_dim=64, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
model.save_pretrained(out); tok.save_pretrained(out)
requests = [GenerationRequest(str(i), [{"role": "user", "content": f"What is {i} + {i}?"}], "think") for i in range(8)]
greedy = SamplingParams(temperature=0, max_tokens=16)
hf = TransformersEngine.from_pretrained(out)
vl = VLLMEngine(out, gpu_memory_utilization=0.3, dtype="float32", enforce_eager=True)
a, b = hf.generate(requests, greedy), vl.generate(requests, greedy)
same = sum(x.token_ids == y.token_ids for x, y in zip(a, b))
print(f"greedy agreement: {same}/{len(a)}")
diff = max(abs(p - q) for x, y in zip(a, b) for p, q in zip(x.logprobs, y.logprobs) if x.token_ids == y.token_ids)
print(f"max |logprob diff| on agreeing samples: {diff:.2e}")
new = {n: p + 0.01 * torch.randn_like(p) for n, p in hf.model.named_parameters()}
hf.load_weights(1, new); vl.load_weights(1, new)
probe = hf.encoder.text_ids("<|im_start|>user\nWhat is 3 + 4?<|im_end|>")
print(f"probe logprob diff after sync: {(hf.probe_logprobs(probe) - vl.probe_logprobs(probe)).abs().max():.2e}")
PY

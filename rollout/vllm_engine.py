"""The vLLM engine (GPU): the transformers engine's interface on top of `vllm.LLM`.

Prompts are the same token ids the transformers engine builds (`PromptEncoder`), so both engines and the
learner see one tokenisation; images go in as `multi_modal_data`. New weights are loaded in place inside every
vLLM worker through a worker extension (`load_named_tensors`), which calls the model's own `load_weights`.
Logprobs are requested as "processed" (after temperature), matching the transformers engine when top-k/top-p
are off, as RL recipes set them.

Requires the `vllm` extra and a GPU; `bench/gpu_check.sh` exercises generation, a weight update and logprob
agreement with the transformers engine. Not exercised on CPU machines (the tests skip it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from rollout.encoding import PromptEncoder
from rollout.types import Completion, GenerationRequest, SamplingParams


class WeightLoaderExtension:
    """Mixed into each vLLM worker (`worker_extension_cls`); `self.model_runner` is the worker's."""

    def load_named_tensors(self, named: list[tuple[str, torch.Tensor]]) -> int:
        device = next(self.model_runner.model.parameters()).device
        self.model_runner.model.load_weights(weights=[(n, t.to(device)) for n, t in named])
        return len(named)


class VLLMEngine:
    def __init__(self, model_dir: str | Path, gpu_memory_utilization: float = 0.5, **llm_kwargs):
        from vllm import LLM

        self.encoder = PromptEncoder.from_model_dir(model_dir)
        self.tokenizer = self.encoder.tokenizer
        self.llm = LLM(model=str(model_dir), gpu_memory_utilization=gpu_memory_utilization,
                       worker_extension_cls=f"{__name__}.WeightLoaderExtension",
                       logprobs_mode="processed_logprobs", **llm_kwargs)
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.weight_version = 0

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, **kwargs) -> "VLLMEngine":
        return cls(model_dir, **kwargs)

    def check_length(self, prompt, request_id: str) -> None:
        if len(prompt) >= self.max_model_len:
            raise ValueError(f"request {request_id}: prompt has {len(prompt)} tokens, the model's context is "
                             f"{self.max_model_len}")

    def generate_encoded(self, prompts, sampling, stop_when=None):
        raise NotImplementedError("agentic generation (tool calls mid-turn) runs on the transformers engine for "
                                  "now: set rollout.engine: transformers for recipes with agentic prompts")

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        prompts, failed = [], {}
        for request in requests:
            try:
                encoded = self.encoder.encode(request)
                self.check_length(encoded, request.request_id)
                prompts.append((request, encoded))
            except (ValueError, TypeError, OSError) as error:
                failed[request.request_id] = str(error)
        outputs = self.llm.generate([self._vllm_prompt(p) for _, p in prompts], self._params(sampling),
                                    use_tqdm=False) if prompts else []
        done = {}
        for (request, encoded), output in zip(prompts, outputs):
            for k, sample in enumerate(output.outputs):
                ids = list(sample.token_ids)
                logprobs = [lp[t].logprob for lp, t in zip(sample.logprobs or [], ids)]
                reason = "length" if sample.finish_reason == "length" else "stop"
                done[(request.request_id, k)] = Completion(
                    request.request_id, k, encoded.input_ids, ids, self.encoder.completion_text(ids), logprobs,
                    [1] * len(ids), reason, weight_version=self.weight_version)
        for request_id, message in failed.items():
            for k in range(sampling.n):
                done[(request_id, k)] = Completion.failed(request_id, k, message)
        return [done[(r.request_id, k)] for r in requests for k in range(sampling.n)]

    def _vllm_prompt(self, encoded) -> dict:
        prompt = {"prompt_token_ids": encoded.input_ids}
        if encoded.images:
            prompt["multi_modal_data"] = {"image": encoded.images}
        return prompt

    def _params(self, sampling: SamplingParams):
        from vllm import SamplingParams as VllmSampling

        return VllmSampling(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                            top_k=sampling.top_k if sampling.top_k > 0 else -1, max_tokens=sampling.max_tokens,
                            stop=sampling.stop or None, seed=sampling.seed, logprobs=0,
                            stop_token_ids=self.encoder.eos_ids + sampling.stop_token_ids)

    def load_weights(self, version: int, named_tensors: Iterable[tuple[str, torch.Tensor]] | dict) -> int:
        items = list(named_tensors.items() if isinstance(named_tensors, dict) else named_tensors)
        self.llm.collective_rpc("load_named_tensors", args=(items,))
        self.weight_version = version
        return len(items)

    def probe_logprobs(self, token_ids: list[int]) -> torch.Tensor:
        from vllm import SamplingParams as VllmSampling

        params = VllmSampling(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        [output] = self.llm.generate([{"prompt_token_ids": token_ids}], params, use_tqdm=False)
        return torch.tensor([lp[t].logprob for lp, t in zip(output.prompt_logprobs[1:], token_ids[1:])])

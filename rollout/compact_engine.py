"""The compact engine: a decode loop of our own over any Hugging Face causal LM (Keye included), doing none of the
work `model.generate` wastes on a GRPO rollout.

`generate` (the transformers engine, kept as the reference) does three things a group rollout does not need:
- each of a prompt's G samples is its own row, so every prompt is prefilled G times. Here each distinct prompt
  is prefilled once and its KV cache is copied to its G rows (`share_prefill`);
- finished rows stay in the batch, decoding padding until the longest row ends: in Keye's mixed-mode batches,
  where no_think answers are a fraction of think answers, that is nearly half the decode work. Here a row leaves
  the batch the step it finishes and the cache is compacted to the rows still running (`drop_finished`);
- with `output_logits=True` it keeps every step's [rows, vocab] logits to compute logprobs afterwards. Here the
  sampled token's logprob is gathered each step (`rollout.sampler`).
The KV cache can be allocated once for the prompt plus the longest completion (`rollout.kv_cache`) instead of
being concatenated every step (`preallocate`); it is off because it measured no faster (`bench.rollout_engines`:
equal on the 26M model; on the 1M one 0.86x in one run and 1.03x in the next, noise). The one-token decode
forward can run through `torch.compile` (`compile_decode`, a recipe's `rollout.engine_options`): faster per step
on the CPU, but each worker process pays the compile on its first generation, so it is off by default
(bench/README.md has both numbers). The options exist so the bench can measure what each choice buys.

Everything else is the transformers engine's (weights, encoding, requests, stop handling, the agentic loop):
greedy outputs equal `generate`'s and sampled logprobs equal a recomputed forward (tests/rollout).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache

from keye_vl.modeling import CACHE
from rollout.encoding import EncodedPrompt, collate
from rollout.hf_engine import StopPredicate, TransformersEngine, stops_on_text
from rollout.kv_cache import preallocated_cache
from rollout.sampler import sample_tokens
from rollout.types import Completion, SamplingParams


@dataclass
class DecodeState:
    """The rows still decoding: which completion each is, its attention mask, next positions and last token."""

    rows: torch.Tensor  # [A] index into the completions
    mask: torch.Tensor  # [A, prompt + max_new] (1 = attend), filled up to the current length
    positions: torch.Tensor  # [3, A, 1] for Keye (3-D RoPE), [A, 1] otherwise
    tokens: torch.Tensor  # [A] the last sampled token

    def keep(self, keep: torch.Tensor) -> "DecodeState":
        return DecodeState(self.rows[keep], self.mask[keep], self.positions[..., keep, :], self.tokens[keep])


class CompactEngine(TransformersEngine):
    def __init__(self, model, processor_or_tokenizer, max_batch_size: int = 64, bf16_autocast: bool = False,
                 share_prefill: bool = True, drop_finished: bool = True, preallocate: bool = False,
                 compile_decode: bool = False):
        super().__init__(model, processor_or_tokenizer, max_batch_size, bf16_autocast)
        self.share_prefill, self.drop_finished, self.preallocate = share_prefill, drop_finished, preallocate
        # the one-token forward through torch.compile (shapes dynamic: rows leave, the cache grows)
        self.decode_step = torch.compile(model, dynamic=True) if compile_decode else model
        self.num_layers = model.config.get_text_config().num_hidden_layers
        self.suppress = torch.tensor(self.encoder.vision_ids, dtype=torch.long) if self.encoder.vision_ids else None

    def generate_encoded(self, prompts: list[EncodedPrompt], sampling: SamplingParams,
                         stop_when: StopPredicate | None = None) -> list[Completion]:
        start = time.perf_counter()
        distinct, source = self.distinct_prompts(prompts)
        batch = collate(distinct, self.encoder.pad_id)
        prompt_len = batch["input_ids"].shape[1]
        max_new = max(1, min(sampling.max_tokens, self.max_model_len - prompt_len))
        generator = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16_autocast else nullcontext()
        with torch.no_grad(), autocast:
            tokens, logprobs, lengths, reasons = self.decode(batch, source, max_new, sampling, stop_when, generator)
        seconds = time.perf_counter() - start
        completions = []
        for row, prompt in enumerate(prompts):
            ids = tokens[row, :lengths[row]].tolist()
            completions.append(Completion(
                request_id="", sample_index=0, prompt_ids=prompt.input_ids, token_ids=ids,
                text=self.encoder.completion_text(ids), logprobs=logprobs[row, :lengths[row]].tolist(),
                loss_mask=[1] * len(ids), finish_reason=reasons[row], weight_version=self.weight_version,
                timings={"generate_s": seconds}))
        return completions

    def distinct_prompts(self, prompts: list[EncodedPrompt]) -> tuple[list[EncodedPrompt], torch.Tensor]:
        """The prompts to prefill and, per row, which of them it continues. A text prompt is shared by equal ids;
        one with images only by being the same object (a request's n samples are)."""
        if not self.share_prefill:
            return prompts, torch.arange(len(prompts))
        index: dict[object, int] = {}
        source = [index.setdefault(id(p) if p.vision else tuple(p.input_ids), len(index)) for p in prompts]
        distinct = {i: p for p, i in zip(prompts, source)}
        return [distinct[i] for i in range(len(index))], torch.tensor(source)

    def decode(self, batch: dict, source: torch.Tensor, max_new: int, sampling: SamplingParams,
               stop_when: StopPredicate | None, generator: torch.Generator | None):
        """Prefill the distinct prompts, copy their cache to the rows, then sample until every row has finished.
        Returns tokens and logprobs [rows, max_new], each row's length and its finish reason."""
        rows = len(source)
        prompt_len = batch["input_ids"].shape[1]
        cache = preallocated_cache(self.num_layers, prompt_len + max_new) if self.preallocate else DynamicCache()
        positions = self.prompt_positions(batch)
        out = self.model(**batch, position_ids=positions, use_cache=True, logits_to_keep=1, **{CACHE: cache})
        cache.batch_select_indices(source)
        mask = torch.ones(rows, prompt_len + max_new, dtype=batch["attention_mask"].dtype)
        mask[:, :prompt_len] = batch["attention_mask"][source]
        state = DecodeState(torch.arange(rows), mask, positions[..., -1:][..., source, :] + 1, torch.empty(0))
        logits = out.logits[source, -1]
        tokens = torch.full((rows, max_new), self.encoder.pad_id, dtype=torch.long)
        logprobs = torch.zeros(rows, max_new)
        lengths, reasons = [max_new] * rows, ["length"] * rows
        done = torch.zeros(rows, dtype=torch.bool)
        stop_ids = torch.tensor(self.encoder.eos_ids + sampling.stop_token_ids)
        for step in range(max_new):
            uniform = torch.rand(rows, generator=generator)[state.rows]  # drawn for every row: see rollout.sampler
            state.tokens, step_logprobs = sample_tokens(logits, sampling, uniform, self.suppress)
            tokens[state.rows, step], logprobs[state.rows, step] = state.tokens, step_logprobs
            finished = torch.isin(state.tokens, stop_ids)
            if sampling.stop or stop_when is not None:
                finished |= self.text_stops(tokens, state.rows, step, sampling.stop, stop_when)
            for row in state.rows[finished & ~done[state.rows]].tolist():
                lengths[row], reasons[row] = step + 1, "stop"
            done[state.rows[finished]] = True
            running = ~done[state.rows]
            if step == max_new - 1 or not running.any():
                break
            if self.drop_finished and not running.all():
                cache.batch_select_indices(running.nonzero()[:, 0])
                state = state.keep(running)
            length = prompt_len + step + 1
            out = self.decode_step(input_ids=state.tokens[:, None], attention_mask=state.mask[:, :length],
                             position_ids=state.positions, use_cache=True, **{CACHE: cache})
            logits, state.positions = out.logits[:, -1], state.positions + 1
        return tokens, logprobs, lengths, reasons

    def prompt_positions(self, batch: dict) -> torch.Tensor:
        """Positions of the left-padded prompt tokens: Keye's 3-D RoPE indices, else 0.. over the real tokens
        (what `generate` computes); a decode step continues each row's last position by one."""
        if hasattr(self.model, "rope_positions"):
            return self.model.rope_positions(batch["input_ids"], batch["attention_mask"], batch.get("image_grid_thw"),
                                             batch.get("video_grid_thw"), batch.get("second_per_grid_ts"))[0]
        return (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)

    def text_stops(self, tokens: torch.Tensor, rows: torch.Tensor, step: int, stop: list[str],
                   stop_when: StopPredicate | None) -> torch.Tensor:
        return torch.tensor([stops_on_text(self.tokenizer, tokens[row, :step + 1], stop, stop_when)
                             for row in rows.tolist()], dtype=torch.bool)

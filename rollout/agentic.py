"""Agentic "think with image" generation: the model writes Python, a sandbox runs it, generation continues.

Each time a sample closes a fenced Python block, the code runs with the sample's current images; its text output
(and any image it wrote) is appended as `<sandbox_output>...</sandbox_output>` and the same assistant turn
continues, up to `max_tool_turns` tool calls and `sampling.max_tokens` completion tokens in all. Inserted
tokens get loss mask 0 (training learns only the model's own tokens) and logprob 0.0.

The loop knows nothing about how code runs: `run_tool(code, images) -> ToolResult` is given to it (the
sandbox of `rewards.sandbox` in real runs). A runner that raises ends that sample with finish_reason "error";
code that fails is not an error of the loop: its traceback is what the model reads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from keye_protocol import chat
from rollout.encoding import EncodedPrompt
from rollout.types import Completion, GenerationRequest, SamplingParams


@dataclass
class ToolResult:
    text: str
    images: list[Any] = field(default_factory=list)
    exit_code: int = 0


ToolRunner = Callable[[str, list[Any]], ToolResult]


def closes_code_block(text: str) -> bool:
    return chat.open_code_block(text) is not None


@dataclass
class _Sample:
    request_id: str
    index: int
    prompt: EncodedPrompt  # grows with every turn
    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    images: list[Any] = field(default_factory=list)
    tool_calls: list[dict] = field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None

    def add(self, ids: list[int], logprobs: list[float], trained: bool) -> None:
        self.token_ids += ids
        self.logprobs += logprobs
        self.loss_mask += [int(trained)] * len(ids)


class AgenticLoop:
    def __init__(self, engine, run_tool: ToolRunner, max_tool_turns: int = 3, max_output_chars: int = 2000):
        self.engine, self.run_tool = engine, run_tool
        self.encoder = engine.encoder
        self.max_tool_turns, self.max_output_chars = max_tool_turns, max_output_chars

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        samples, failed = self._start(requests, sampling.n)
        for turn in range(self.max_tool_turns + 1):
            active = [s for s in samples if s.finish_reason is None]
            if not active:
                break
            budget = max(sampling.max_tokens - len(s.token_ids) for s in active)
            outs = self.engine.generate_encoded([s.prompt for s in active],
                                                sampling.model_copy(update={"max_tokens": budget, "n": 1}),
                                                stop_when=closes_code_block)
            for sample, out in zip(active, outs):
                self._advance(sample, out, sampling.max_tokens, last_turn=turn == self.max_tool_turns)
        return self._finish(requests, sampling.n, samples, failed)

    def _start(self, requests, n):
        samples, failed = [], {}
        for request in requests:
            try:
                prompt = self.encoder.encode(request)
                self.engine.check_length(prompt, request.request_id)
            except (ValueError, TypeError, OSError) as error:
                failed.update({(request.request_id, k): Completion.failed(request.request_id, k, str(error))
                               for k in range(n)})
                continue
            samples += [_Sample(request.request_id, k, prompt, prompt.input_ids) for k in range(n)]
        return samples, failed

    def _advance(self, sample: _Sample, out: Completion, max_tokens: int, last_turn: bool) -> None:
        room = max_tokens - len(sample.token_ids)
        ids, logprobs = out.token_ids[:room], out.logprobs[:room]
        sample.add(ids, logprobs, trained=True)
        sample.prompt, _ = self.encoder.append(sample.prompt, ids)
        if ids and ids[-1] in self.encoder.eos_ids:
            sample.finish_reason = "stop"
            return
        code = chat.open_code_block(self.encoder.tokenizer.decode(sample.token_ids))
        if code is None or len(sample.token_ids) >= max_tokens:
            sample.finish_reason = "length" if len(sample.token_ids) >= max_tokens else out.finish_reason
            return
        if last_turn:
            sample.finish_reason = "tool_limit"
            return
        self._call_tool(sample, code)

    def _call_tool(self, sample: _Sample, code: str) -> None:
        start = time.perf_counter()
        try:
            result = self.run_tool(code, list(sample.prompt.images))
        except Exception as error:  # the sandbox itself failed: end this sample, keep the batch going
            sample.finish_reason, sample.error = "error", f"sandbox failed: {type(error).__name__}: {error}"
            return
        text, images = result.text[: self.max_output_chars], list(result.images)
        try:
            sample.prompt, inserted = self.encoder.append(
                sample.prompt, self.encoder.text_ids(f"\n{chat.SANDBOX_OPEN}{text}"), images)
        except ValueError as error:  # an image the processor refuses (a 132x12 crop): the model reads why
            text, images = f"{text}\n[images not shown: {error}]"[: self.max_output_chars + 200], []
            sample.prompt, inserted = self.encoder.append(sample.prompt,
                                                          self.encoder.text_ids(f"\n{chat.SANDBOX_OPEN}{text}"))
        sample.prompt, tail = self.encoder.append(sample.prompt, self.encoder.text_ids(f"{chat.SANDBOX_CLOSE}\n"))
        inserted += tail
        sample.add(inserted, [0.0] * len(inserted), trained=False)
        sample.images += images
        sample.tool_calls.append({"code": code, "output": text, "exit_code": result.exit_code,
                                  "images": len(images), "seconds": time.perf_counter() - start})

    def _finish(self, requests, n, samples, failed) -> list[Completion]:
        weight_version = self.engine.weight_version
        done = {(s.request_id, s.index): Completion(
            s.request_id, s.index, s.prompt_ids, s.token_ids, self.encoder.completion_text(s.token_ids),
            s.logprobs, s.loss_mask, s.finish_reason or "length", s.error, s.images, s.tool_calls,
            weight_version) for s in samples}
        done.update(failed)
        return [done[(r.request_id, k)] for r in requests for k in range(n)]

"""What goes into and comes out of a generation engine.

Engines know nothing about rewards, advantages or training: a request is a conversation (with its images and
videos) and a mode; a completion is token ids, text, the sampler's per-token logprobs, a loss mask and why it
ended. `finish_reason` is one of FINISH_REASONS; "error" always comes with a message in `error`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

FINISH_REASONS = ("stop", "length", "error", "tool_limit")


class SamplingParams(BaseModel):
    """Sampling settings; defaults are Keye's (T 0.6, top_p 0.95, top_k 20). temperature 0 means greedy.

    Sampler logprobs are those of the temperature-scaled distribution before top-k/top-p truncation, the
    quantity the learner recomputes (it divides its logits by the same temperature).
    """

    model_config = ConfigDict(extra="forbid")

    n: int = Field(1, ge=1)
    temperature: float = Field(0.6, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(20, ge=0)  # 0 = no top-k
    max_tokens: int = Field(256, ge=1)
    stop: list[str] = Field(default_factory=list)
    stop_token_ids: list[int] = Field(default_factory=list)
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def logprob_temperature(self) -> float:
        return 1.0 if self.greedy else self.temperature


@dataclass
class GenerationRequest:
    """One prompt. `messages` is a chat whose content items may be images/videos; `mode` sets the suffix."""

    request_id: str
    messages: list[dict]
    mode: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Completion:
    """One sampled response to one request (the `sample_index`-th of n).

    `token_ids` are the completion's tokens only (not the prompt). In agentic mode they include the inserted
    sandbox outputs, which `loss_mask` marks 0 and whose `logprobs` are 0.0; `images` are the images the
    sandbox produced, in the order of their placeholders in `token_ids`.
    """

    request_id: str
    sample_index: int
    prompt_ids: list[int]
    token_ids: list[int]
    text: str
    logprobs: list[float]
    loss_mask: list[int]
    finish_reason: str
    error: str | None = None
    images: list[Any] = field(default_factory=list)
    tool_calls: list[dict] = field(default_factory=list)
    weight_version: int = 0
    worker: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def failed(cls, request_id: str, sample_index: int, message: str) -> "Completion":
        return cls(request_id, sample_index, [], [], "", [], [], "error", error=message)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_model_tokens(self) -> int:
        return sum(self.loss_mask)

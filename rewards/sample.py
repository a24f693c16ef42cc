"""`Sample`: everything a reward function may look at for one completion.

A sample is plain data: the prompt messages, the completion (text and token ids), its parsed mode parts
(through `keye_protocol.chat.parse_response`, the one place the chat protocol lives), the mode, the ground truth,
the images, every dataset column, and where it sits in its group. It knows nothing about how it was
generated, who scores it, or where it is sent (it is pickled to reward workers as it is).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from keye_protocol.chat import Mode, ParsedResponse, content_items, mode_of_prompt, parse_mode, parse_response

# Row keys that `Sample.from_row` maps to fields; every key (these included) is also kept in `columns`.
GROUND_TRUTH_KEYS = ("ground_truth", "solution", "answer", "reward_model")


@dataclass
class Sample:
    prompt: list[dict]  # chat messages, as `keye_protocol.chat.render_chat` takes them
    completion: str
    completion_ids: list[int] = field(default_factory=list)
    mode: Mode | None = None  # None: read from the last user turn's suffix (no suffix = auto_think)
    ground_truth: Any = None
    images: list[Any] = field(default_factory=list)
    columns: dict[str, Any] = field(default_factory=dict)
    group_index: int = 0
    group_size: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.prompt, str):
            self.prompt = [{"role": "user", "content": self.prompt}]
        self.mode = parse_mode(self.mode) if self.mode is not None else mode_of_prompt(self.prompt_text)

    # ---------------------------------------------------------------- parsed mode parts (keye_protocol.chat)
    @cached_property
    def parsed(self) -> ParsedResponse:
        return parse_response(self.completion)

    @property
    def analysis(self) -> str | None:
        return self.parsed.analysis

    @property
    def think(self) -> str | None:
        return self.parsed.think

    @property
    def answer(self) -> str | None:
        return self.parsed.answer

    @property
    def boxed(self) -> str | None:
        return self.parsed.boxed

    @property
    def prompt_text(self) -> str:
        """The text of the last user turn (its mode suffix included)."""
        users = [m for m in self.prompt if m.get("role") == "user"] or self.prompt[-1:]
        if not users:
            return ""
        return "".join(i.get("text", "") for i in content_items(users[-1]) if i.get("type") == "text")

    # ---------------------------------------------------------------- construction from a dataset row
    @classmethod
    def from_row(cls, row: dict, group_index: int = 0, group_size: int = 1) -> Sample:
        """A sample from one JSONL row: `prompt` (text or messages), `completion` (text or an assistant message
        list, as TRL writes it), the ground truth under one of `GROUND_TRUTH_KEYS`, optional `mode`,
        `completion_ids` and `images`. Every key stays available in `columns`."""
        if "prompt" not in row or "completion" not in row:
            raise ValueError(f"a reward row needs 'prompt' and 'completion' keys; this one has {sorted(row)}")
        if isinstance(row.get("images"), str):  # list() would make one image of each character
            shown = json.dumps(row["images"])[:80]
            raise ValueError(f"'images' must be a list of paths, got the string {shown}; write \"images\": [{shown}]")
        completion = row["completion"]
        if isinstance(completion, list):  # TRL's conversational form: [{"role": "assistant", "content": ...}]
            completion = "".join(m["content"] for m in completion if isinstance(m.get("content"), str))
        truth_key = next((k for k in GROUND_TRUTH_KEYS if k in row), None)
        truth = row[truth_key] if truth_key else None
        if truth_key == "reward_model" and isinstance(truth, dict):  # verl rows: {"ground_truth": ...}
            truth = truth.get("ground_truth")
        return cls(prompt=row["prompt"], completion=completion, completion_ids=list(row.get("completion_ids", [])),
                   mode=row.get("mode"), ground_truth=truth, images=list(row.get("images", [])),
                   columns=dict(row), group_index=group_index, group_size=group_size)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("parsed", None)  # re-parsed on the other side: cheaper than pickling it
        return state

"""The unit every source produces: a verifiable `Task` and the `Solution`s a teacher may write for it.

A task is a question (text, plus images or one video as frames), a gold answer in the form its verifier reads,
the verifier kind, and the solver's own worked solution. It knows nothing about modes, tags or teachers: the
formatters turn a solution into a response in one mode, teachers decide which solution (or a model's) is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

# Verifier kinds (see `cold_start_data.verify`): math = math-verify equality, count = exact integer,
# boxes = matched IoU, text = normalised text, order = exact sequence of integers.
KINDS = ("math", "count", "boxes", "text", "order")


@dataclass
class Solution:
    """A worked solution: reasoning steps (one per line) and the visible final answer (``\\boxed{82}`` or a
    box string). `flawed` marks a deliberately wrong path (the systematic flaw of the solver teacher)."""

    steps: list[str]
    final: str
    flawed: bool = False

    @property
    def reasoning(self) -> str:
        return "\n".join(self.steps)


@dataclass
class ToolPlan:
    """Agentic tasks: the code the solver writes, what it says before it, and how its printed output
    becomes the answer (so that the sandbox, not the solver, decides whether the sample is right)."""

    code: str
    intro: str
    read_output: Callable[[str], str | None]  # stdout -> answer text, None if unreadable
    explain: Callable[[str, str], list[str]]  # (stdout, answer) -> the steps after the sandbox output


@dataclass
class Task:
    source: str
    prompt: str  # the user's text, without a mode suffix
    answer: str  # the gold answer as the verifier reads it
    kind: str
    solution: Solution
    flawed_solution: Solution | None = None  # the source's systematic flaw, where it has one
    images: list[Any] = field(default_factory=list)  # PIL images (or paths, for user data), before the text
    video: list[np.ndarray] | None = None  # frames [H, W, 3] uint8
    fps: float = 2.0
    tool: ToolPlan | None = None
    chat: list[dict] | None = None  # user data: the conversation as given (its turns before the response)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task kind {self.kind!r} is not one of {KINDS}")

    @property
    def num_steps(self) -> int:
        """The solver's step count: what the complexity judge reads."""
        return len(self.solution.steps)

    def messages(self) -> list[dict]:
        """The user turn, vision items first (as Keye's data puts them), without a mode suffix."""
        if self.chat is not None:
            return [dict(m) for m in self.chat]
        items: list[dict] = [{"type": "image", "image": image} for image in self.images]
        if self.video is not None:
            items.append({"type": "video", "video": list(self.video), "fps": self.fps})
        items.append({"type": "text", "text": self.prompt})
        return [{"role": "user", "content": items}]

"""Mode formatters: a task's solution written as a response in each of Keye's modes.

All tags come from `keye_protocol.chat.format_response` / `format_code_step`, so cold-start data, rollout parsing,
format rewards and evaluation read the same protocol (KEYE.md):
- no_think:   the final answer alone (``\\boxed{82}`` or a box string);
- think:      ``<think>steps</think><answer>final</answer>``;
- auto_think: ``<analysis>the judge's verdict</analysis>`` then ``<answer>`` (simple) or a think response;
- agentic:    think, whose reasoning runs code: intro, the code block, its ``<sandbox_output>``, the reading.
The analysis sentences are worded so that `rewards.format.analysis_decision` reads the decision back.
This module knows nothing about teachers or verification.
"""

from __future__ import annotations

from typing import Any

from cold_start_data.tasks import Solution, Task
from keye_protocol.chat import SANDBOX_CLOSE, Mode, format_code_step, format_response, parse_mode, with_mode


def prompt_messages(task: Task, mode: str | Mode) -> list[dict]:
    """The user turn of `task` ending with the mode's suffix (``/think`` ...)."""
    return with_mode(task.messages(), mode)


def analysis_text(complex_: bool, reason: str) -> str:
    """The auto_think analysis for the judge's verdict.

    >>> analysis_text(False, "one step")
    'This is simple, so I can answer directly: one step.'
    """
    if complex_:
        return f"This is multi-step and needs reasoning: {reason}."
    return f"This is simple, so I can answer directly: {reason}."


def format_solution(mode: str | Mode, solution: Solution, complex_: bool | None = None, reason: str = "") -> str:
    """`solution` as a no_think, think or auto_think response (auto_think needs the judge's `complex_`)."""
    mode = parse_mode(mode)
    if mode is Mode.NO_THINK:
        return format_response(mode, solution.final)
    if mode is Mode.THINK:
        return format_response(mode, solution.final, think=solution.reasoning)
    if mode is Mode.AUTO_THINK:
        if complex_ is None:
            raise ValueError("auto_think needs the complexity judge's verdict")
        think = solution.reasoning if complex_ else None
        return format_response(mode, solution.final, think=think, analysis=analysis_text(complex_, reason))
    raise ValueError("agentic responses are written by `format_agentic` (they need the sandbox's output)")


def format_agentic(intro: str, code: str, sandbox_output: str, after: list[str], final: str) -> str:
    """An agentic response: intro, one code step with its recorded sandbox output, the steps that read it."""
    think = f"{intro}\n{format_code_step(code, sandbox_output)}" + "\n".join(after)
    return format_response(Mode.AGENTIC, final, think=think)


def assistant_content(response: str, sandbox_images: list[list[Any]] | None = None) -> list[dict]:
    """The assistant turn as content items. Images a sandbox step produced go just before that step's
    ``</sandbox_output>``, where the rollout's agentic loop inserts them, so SFT sees what RL will see."""
    if not sandbox_images or not any(sandbox_images):
        return [{"type": "text", "text": response}]
    pieces = response.split(SANDBOX_CLOSE)
    if len(pieces) - 1 != len(sandbox_images):
        raise ValueError(f"{len(sandbox_images)} sandbox image lists for {len(pieces) - 1} sandbox outputs")
    items: list[dict] = []
    for k, piece in enumerate(pieces):
        text = piece if k == 0 else SANDBOX_CLOSE + piece
        if text:
            items.append({"type": "text", "text": text})
        if k < len(sandbox_images):
            items += [{"type": "image", "image": image} for image in sandbox_images[k]]
    return items


def response_text(content: list[dict] | str) -> str:
    """The response's text with vision items left out (what the chat parser and verifiers read)."""
    if isinstance(content, str):
        return content
    return "".join(item.get("text") or "" for item in content if item.get("type") == "text")

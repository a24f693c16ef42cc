"""The chat-mode protocol of Keye-VL, in one place.

Cold-start formatting, rollout parsing, format rewards and evaluation all read and write model output
through this module, so the four modes mean the same thing everywhere:

- ``no_think``   the answer directly (an empty ``<think>\\n\\n</think>`` may precede it);
- ``think``      ``<think>reasoning</think><answer>... \\boxed{final} ...</answer>``;
- ``auto_think`` ``<analysis>why</analysis>`` then either ``<answer>..</answer>`` or a full think response;
- ``agentic``    think mode whose reasoning holds fenced Python blocks, each followed by the sandbox's
  ``<sandbox_output>..</sandbox_output>``.

It also renders conversations into the Qwen-style chat markup with vision placeholders. It knows nothing
about tokens or pixels: the processor expands placeholders, the tokenizer turns text into ids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Mode(str, Enum):
    NO_THINK = "no_think"
    THINK = "think"
    AUTO_THINK = "auto_think"
    AGENTIC = "agentic"


MODE_SUFFIX = {
    Mode.NO_THINK: "/no_think",
    Mode.THINK: "/think",
    Mode.AUTO_THINK: "/auto_think",
    Mode.AGENTIC: "/agentic_think",
}

# Tags that the model writes. They are ordinary added tokens in the tiny tokenizer (not "special"), so decoders
# that skip special tokens keep them (see DESIGN.md).
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
ANALYSIS_OPEN, ANALYSIS_CLOSE = "<analysis>", "</analysis>"
SANDBOX_OPEN, SANDBOX_CLOSE = "<sandbox_output>", "</sandbox_output>"
CODE_OPEN, CODE_CLOSE = "```python\n", "\n```"
REASONING_TAGS = [THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE, ANALYSIS_OPEN, ANALYSIS_CLOSE,
                  SANDBOX_OPEN, SANDBOX_CLOSE]

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
IMAGE_PLACEHOLDER = VISION_START + IMAGE_PAD + VISION_END
VIDEO_PLACEHOLDER = VISION_START + VIDEO_PAD + VISION_END


def parse_mode(value: str | Mode | None) -> Mode:
    """Accept a Mode, its name, or its suffix (``/agentic_think``); None means auto, as in the paper."""
    if value is None:
        return Mode.AUTO_THINK
    if isinstance(value, Mode):
        return value
    for mode, suffix in MODE_SUFFIX.items():
        if value in (mode.value, suffix, suffix.lstrip("/")):
            return mode
    valid = [m.value for m in Mode]
    raise ValueError(f"unknown chat mode {value!r}; valid modes are {valid} (or their suffixes "
                     f"{list(MODE_SUFFIX.values())})")


def mode_of_prompt(text: str) -> Mode:
    """The mode a user turn asks for: its suffix, or auto_think when it has none."""
    stripped = text.rstrip()
    for mode, suffix in MODE_SUFFIX.items():
        if stripped.endswith(suffix):
            return mode
    return Mode.AUTO_THINK


# --------------------------------------------------------------------------------------------- prompts
def content_items(message: dict) -> list[dict]:
    """A message's content as a list of typed items; plain strings become one text item."""
    content = message.get("content", "")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content)


def with_mode(messages: list[dict], mode: str | Mode | None) -> list[dict]:
    """Copy of `messages` whose last user turn ends with the mode suffix (replacing any suffix it had)."""
    mode = parse_mode(mode)
    messages = [dict(m) for m in messages]
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise ValueError("a prompt needs at least one user message to carry the mode suffix")
    last = messages[users[-1]]
    suffix = MODE_SUFFIX[mode]
    items = [{**item, "text": strip_mode_suffix(item["text"])} if item["type"] == "text" else item
             for item in content_items(last)]
    if items and items[-1]["type"] == "text":  # the suffix ends the turn, after any image or video
        items[-1] = {**items[-1], "text": f"{items[-1]['text']} {suffix}".lstrip()}
    else:
        items.append({"type": "text", "text": f" {suffix}"})
    last["content"] = items
    return messages


def strip_mode_suffix(text: str) -> str:
    stripped = text.rstrip()
    for suffix in MODE_SUFFIX.values():
        if stripped.endswith(suffix):
            return stripped[: -len(suffix)].rstrip()
    return stripped


def render_item(item: dict) -> str:
    kind = item["type"]
    if kind == "text":
        return item["text"]
    if kind == "image":
        return IMAGE_PLACEHOLDER
    if kind == "video":
        return VIDEO_PLACEHOLDER
    raise ValueError(f"unknown content item type {kind!r}; expected 'text', 'image' or 'video'")


def render_chat(messages: list[dict], mode: str | Mode | None = None, add_generation_prompt: bool = True,
                continue_final_message: bool = False) -> str:
    """Render a conversation to Keye's chat markup.

    `mode` (if given) sets the last user turn's suffix. `continue_final_message` leaves the last (assistant)
    message open so that generation continues inside it: the agentic loop appends a sandbox result, possibly
    with an image, and lets the model go on within the same turn.
    """
    if mode is not None:
        messages = with_mode(messages, mode)
    parts = []
    for i, message in enumerate(messages):
        body = "".join(render_item(item) for item in content_items(message))
        is_open = continue_final_message and i == len(messages) - 1
        parts.append(f"{IM_START}{message['role']}\n{body}" + ("" if is_open else f"{IM_END}\n"))
    if add_generation_prompt and not continue_final_message:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts)


def vision_inputs(messages: list[dict]) -> tuple[list[Any], list[dict]]:
    """Images and video items in the order their placeholders appear in `render_chat`'s output."""
    images, videos = [], []
    for message in messages:
        for item in content_items(message):
            if item["type"] == "image":
                images.append(item["image"])
            elif item["type"] == "video":
                videos.append(item)
    return images, videos


# --------------------------------------------------------------------------------------------- responses
def format_response(mode: str | Mode, answer: str, think: str | None = None, analysis: str | None = None) -> str:
    """Write a response in the exact format of `mode` (used by the cold-start mixture).

    `answer` is the visible answer (put ``\\boxed{}`` in it yourself where a checker needs one). auto_think
    needs `analysis`; it reasons (think + answer) exactly when `think` is given.
    """
    mode = parse_mode(mode)
    if mode is Mode.NO_THINK:
        return answer
    if mode in (Mode.THINK, Mode.AGENTIC):
        if think is None:
            raise ValueError(f"mode {mode.value} needs the reasoning text (`think`)")
        return f"{THINK_OPEN}{think}{THINK_CLOSE}{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"
    if analysis is None:
        raise ValueError("mode auto_think needs the `analysis` that decides whether to reason")
    head = f"{ANALYSIS_OPEN}{analysis}{ANALYSIS_CLOSE}"
    body = f"{THINK_OPEN}{think}{THINK_CLOSE}" if think is not None else ""
    return f"{head}{body}{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"


def format_code_step(code: str, sandbox_output: str | None = None) -> str:
    """One agentic tool step as it appears inside ``<think>``: a closed code block and its sandbox output."""
    step = f"{CODE_OPEN}{code.strip()}{CODE_CLOSE}"
    if sandbox_output is not None:
        step += f"\n{SANDBOX_OPEN}{sandbox_output}{SANDBOX_CLOSE}\n"
    return step


@dataclass
class ParsedResponse:
    """The parts of one model response. Missing parts are None; `problems` lists what is malformed."""

    text: str
    analysis: str | None = None
    think: str | None = None
    answer: str | None = None
    boxed: str | None = None
    code_blocks: list[str] = field(default_factory=list)
    open_code_block: bool = False  # a ```python block that was never closed
    sandbox_outputs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def reasoned(self) -> bool:
        """Whether the response contains non-empty reasoning (what auto_think decided)."""
        return bool(self.think and self.think.strip())

    @property
    def final_answer(self) -> str:
        """What a checker compares: the boxed content if any, else the answer text."""
        if self.boxed is not None:
            return self.boxed.strip()
        return (self.answer or "").strip()


_CODE_RE = re.compile(r"```python\n(.*?)```", re.DOTALL)
_SANDBOX_RE = re.compile(re.escape(SANDBOX_OPEN) + r"(.*?)" + re.escape(SANDBOX_CLOSE), re.DOTALL)


def _between(text: str, open_tag: str, close_tag: str) -> tuple[str | None, bool]:
    """Content of the first open..close pair; (content, closed). Unclosed returns the rest of the text."""
    start = text.find(open_tag)
    if start < 0:
        return None, False
    start += len(open_tag)
    end = text.find(close_tag, start)
    if end < 0:
        return text[start:], False
    return text[start:end], True


def parse_response(text: str) -> ParsedResponse:
    """Split a response into its parts, the way evaluation reads it (KEYE.md): drop everything up to
    ``</analysis>`` and ``</think>``, take the last ``<answer>``, then its last ``\\boxed{}``.

    Fallback when there is no ``<answer>`` tag (no_think responses): the text after the reasoning is the answer.
    """
    out = ParsedResponse(text=text)
    out.analysis, closed = _between(text, ANALYSIS_OPEN, ANALYSIS_CLOSE)
    if out.analysis is not None and not closed:
        out.problems.append("unclosed <analysis>")
    out.think, closed = _between(text, THINK_OPEN, THINK_CLOSE)
    if out.think is not None and not closed:
        out.problems.append("unclosed <think>")
    if out.think is None and THINK_CLOSE in text:
        out.problems.append("</think> without <think>")
    rest = text
    for tag in (ANALYSIS_CLOSE, THINK_CLOSE):
        if tag in rest:
            rest = rest.rsplit(tag, 1)[1]
    if ANSWER_OPEN in rest:
        answer = rest.rsplit(ANSWER_OPEN, 1)[1]
        if ANSWER_CLOSE in answer:
            answer = answer.split(ANSWER_CLOSE, 1)[0]
        else:
            out.problems.append("unclosed <answer>")
        out.answer = answer
    elif out.think is not None and THINK_CLOSE not in text:
        out.answer = None  # still reasoning: there is no answer yet
    else:
        out.answer = rest
    out.boxed = last_boxed(out.answer) if out.answer is not None else None
    reasoning = out.think or ""
    out.code_blocks = [c.strip("\n") for c in _CODE_RE.findall(reasoning)]
    out.open_code_block = reasoning.count("```python") > len(out.code_blocks)
    out.sandbox_outputs = _SANDBOX_RE.findall(reasoning)
    return out


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (nested braces allowed), or None.

    >>> last_boxed(r"so \\boxed{\\frac{1}{2}} and \\boxed{3}")
    '3'
    >>> last_boxed(r"\\boxed{\\frac{1}{2}}")
    '\\\\frac{1}{2}'
    """
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None  # unbalanced: the box was cut off


def open_code_block(text: str) -> str | None:
    """If `text` ends a fenced Python block just now (the agentic loop's trigger), return its code."""
    if not text.rstrip().endswith("```"):
        return None
    blocks = _CODE_RE.findall(text)
    if not blocks or not text.rstrip().endswith(blocks[-1] + "```"):
        return None
    return blocks[-1].strip("\n")


# Jinja form of `render_chat` (without mode handling), for tools that call `tokenizer.apply_chat_template`
# themselves (TRL, vLLM's chat endpoint). tests/keye_protocol/test_chat.py keeps the two in agreement.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'text' -%}{{- item['text'] -}}"
    "{%- elif item['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

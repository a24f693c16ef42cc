"""A trace record as a view shows it: the prompt flattened to text, the completion split into highlighted
segments, the parsed answer, and image links.

The same dict feeds the JSON API, the static export and the terminal view, so they cannot drift. Text stays
raw here: every renderer escapes it (the page sets `textContent`, rich `Text` never parses markup).
"""

from __future__ import annotations

from typing import Callable

from posttrain.viewer.parts import segments, summary

# fields copied unchanged from the trace record (see posttrain/traces.py TRACE_FIELDS and RlLoop.log)
PLAIN_FIELDS = ("run", "stage", "step", "prompt_id", "sample_index", "group", "mode", "answer", "completion",
                "finish_reason", "prompt_tokens", "completion_tokens", "reward", "reward_components",
                "reward_error", "reward_message", "advantage", "weight_version", "worker", "timings", "tool_calls")


def prompt_text(prompt) -> str:
    """A prompt as text: a string stays as is; chat messages become `role: text` lines, images `[image]`.

    >>> prompt_text([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}])
    'user: [image] Hi'
    """
    if prompt is None:
        return ""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, dict):
        prompt = [prompt]
    lines = []
    for message in prompt:
        if not isinstance(message, dict):
            lines.append(str(message))
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(_item_text(item) for item in content)
        lines.append(f"{message.get('role', '?')}: {content}")
    return "\n".join(lines)


def _item_text(item) -> str:
    if not isinstance(item, dict):
        return str(item)
    if item.get("type") == "text":
        return str(item.get("text", ""))
    return f"[{item.get('type', 'item')}]"


def view_record(record: dict, stage: str, position: int, image_url: Callable[[str, str], str]) -> dict:
    """`image_url(stage, relative_path)` turns a trace image path into a link (URL or data URI)."""
    view = {name: record.get(name) for name in PLAIN_FIELDS}
    view["stage"] = stage
    view["id"] = f"{stage}:{position}"
    view["prompt_text"] = prompt_text(record.get("prompt"))
    view["segments"] = segments(record.get("completion"))
    view["parsed"] = summary(record.get("completion"))
    view["images"] = [image_url(stage, path) for path in record.get("images") or []]
    return view

"""A trace record as a view shows it: the prompt flattened to text, the completion split into highlighted
segments, the parsed answer, and image links.

Every record a viewer reads passes `load_record` / `trace_record` first: one pydantic model says which types the
views accept, so a damaged or hostile line is skipped with a reason (`BadRecord`) instead of failing a renderer
half-way through. A view is bounded whatever a record holds: long text fields are clipped around a marker
(`clip`), to a length that shrinks with the number of samples one reply carries (`text_limit`).

The same dict feeds the JSON API, the static export and the terminal view, so they cannot drift. Text stays
raw here: every renderer escapes it (the page sets `textContent`, rich `Text` never parses markup).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from posttrain.viewer import gaps
from posttrain.viewer.parts import segments, summary

MAX_COUNT = 2**31 - 1  # steps, groups, sample indices: the index keeps them in C arrays that hold 32 bits everywhere
SHORT_TEXT = 256  # names and ids (run, mode, prompt id, worker, image path, component name): longer is damage
MAX_ITEMS = 64  # images, reward components, timings of one sample; bounds what a view copies unclipped
MAX_DEPTH = 32  # nesting of a record's values (chat messages, tool calls); deeper is damage, and the recursive
                # encoders downstream (json.dumps, page.finite) would overflow Python's stack on it
TEXT_LIMITS = (2_000, 200_000)  # chars of one text field in a view: at least a sample's start and end, at most a
                                # long reasoning trace whole (~50k tokens)
REPLY_TEXT = 4_000_000  # chars of text one reply shares out among its samples: keeps a reply to tens of MB

# fields copied unchanged from the checked record (see posttrain/traces.py TRACE_FIELDS and RlLoop.log)
PLAIN_FIELDS = ("run", "stage", "step", "prompt_id", "sample_index", "group", "mode", "finish_reason",
                "prompt_tokens", "completion_tokens", "reward", "reward_components", "reward_error", "advantage",
                "weight_version", "worker", "timings", "teacher", "teacher_gap")

Count = Annotated[int, Field(strict=True, ge=0, le=MAX_COUNT)]
Name = Annotated[str, Field(max_length=SHORT_TEXT)]
# float | None is pydantic's lax float: JSON numbers and numeric strings ("nan", "inf": how a non-finite value
# may have been logged), never a list or a word
Numbers = Annotated[dict[Name, float | None], Field(max_length=MAX_ITEMS)]


class BadRecord(ValueError):
    """A trace line a view cannot show; the message is one line saying why."""


class TraceRecord(BaseModel):
    """The fields of a trace record (posttrain/traces.py `sample_record`) that the views read, with the types they
    need; other fields (hint_level, label, ...) are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    run: Name | None = None
    stage: Name | None = None
    step: Count | None = None
    prompt_id: Name | Annotated[int, Field(strict=True)] | None = None  # any int: datasets may hash ids to 64 bits
    sample_index: Count | None = None
    group: Count | None = None
    mode: Name | None = None
    prompt: str | list | dict | None = None  # text or chat messages (any shape `prompt_text` flattens)
    answer: Any = None  # the dataset's reference: text, a number, or structured (a box, a list of options)
    completion: str | None = None
    finish_reason: Name | None = None
    prompt_tokens: Count | None = None
    completion_tokens: Count | None = None
    reward: float | None = None
    reward_components: Numbers | None = None
    reward_error: Name | None = None
    reward_message: str | None = None
    advantage: float | None = None
    weight_version: Count | None = None
    worker: Name | None = None
    timings: Numbers | None = None
    tool_calls: list | None = None  # views show only their count: their code and output are in the completion
    images: Annotated[list[Name], Field(max_length=MAX_ITEMS)] | None = None
    teacher: Name | None = None  # distill: the teacher the sample was routed to
    teacher_gap: float | None = None  # distill: its tokens' mean log p_student - log p_teacher
    teacher_gaps: list[float] | None = None  # distill: that gap per completion token ...
    token_texts: list[Name] | None = None  # ... and each token's text (a token is short: a long one is damage)

    @field_validator("prompt", "answer", "tool_calls", mode="before")
    @classmethod
    def _shallow(cls, value):
        """The free-form fields; the others' types allow no nesting to speak of."""
        if depth(value) > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        return value

    @model_validator(mode="after")
    def _one_gap_per_token(self):
        """The gap strip pairs `teacher_gaps` with `token_texts` one to one, over the completion's tokens."""
        if self.teacher_gaps is None:
            return self
        tokens = len(self.token_texts) if self.token_texts is not None else None
        if tokens != len(self.teacher_gaps) or self.completion_tokens not in (None, tokens):
            raise ValueError(f"teacher_gaps: {len(self.teacher_gaps)} values for {tokens} token_texts "
                             f"(completion_tokens {self.completion_tokens})")
        return self


def depth(value) -> int:
    """How deeply lists and dicts nest in `value`, counted without recursion.

    >>> depth({"a": [1, {"b": []}]}), depth("text")
    (4, 0)
    """
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def trace_record(record) -> TraceRecord:
    """`record` (a parsed JSON value) checked against `TraceRecord`; raises `BadRecord` naming the first problem.

    >>> trace_record({"step": 1e23})
    Traceback (most recent call last):
    ...
    posttrain.viewer.records.BadRecord: step: Input should be a valid integer
    """
    try:
        return TraceRecord.model_validate(record)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        where = _where(record, first["loc"])
        raise BadRecord(f"{where}: {first['msg']}" if where else first["msg"]) from None


def _where(record, loc: tuple) -> str:
    """The path of a validation error in the record (`reward_components.math`), without the union member names
    pydantic puts in between (`prompt_id.constrained-str`)."""
    parts, value = [], record
    for part in loc:
        if (isinstance(value, dict) and part in value
                or isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)):
            parts.append(str(part))
            value = value[part]
    return ".".join(parts)


def load_record(line: bytes) -> TraceRecord:
    """One JSONL line as a checked record; raises `BadRecord` for broken JSON as for wrong types."""
    try:
        record = json.loads(line)
    except RecursionError:  # json's C parser gives up on nesting past Python's recursion limit
        raise BadRecord("JSON nested too deeply to parse") from None
    except ValueError as error:  # broken JSON, bad UTF-8, an integer of more than 4300 digits
        raise BadRecord(f"not JSON ({error})") from None
    return trace_record(record)


def clip(text: str | None, limit: int) -> str | None:
    """`text` cut to its first and last `limit // 2` characters around a marker saying how much was cut: a view
    stays small whatever the record holds, and a completion's end (where the answer is) stays visible.

    >>> clip("abcdefghij", 4)
    'ab … [6 of 10 characters cut] … ij'
    >>> clip("short", 4_000)
    'short'
    """
    if text is None or len(text) <= limit:
        return text
    head, tail = (limit + 1) // 2, limit // 2
    return f"{text[:head]} … [{len(text) - limit:,} of {len(text):,} characters cut] … {text[len(text) - tail:]}"


def text_limit(samples: int) -> int:
    """Characters of one text field when a reply carries `samples` views: `REPLY_TEXT` shared out, within
    `TEXT_LIMITS`.

    >>> text_limit(1), text_limit(50), text_limit(10_000)
    (200000, 80000, 2000)
    """
    return min(TEXT_LIMITS[1], max(TEXT_LIMITS[0], REPLY_TEXT // max(samples, 1)))


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


def view_record(record: dict, stage: str, position: int, image_url: Callable[[str, str], str],
                limit: int = TEXT_LIMITS[1]) -> dict:
    """`image_url(stage, relative_path)` turns a trace image path into a link (URL or data URI); text fields are
    clipped to `limit` characters and `clipped` names each one cut with its whole length. Raises `BadRecord`."""
    checked = trace_record(record)
    view = checked.model_dump(include=set(PLAIN_FIELDS))
    full = {"completion": checked.completion, "prompt_text": prompt_text(checked.prompt),
            "answer": _answer_text(checked.answer), "reward_message": checked.reward_message}
    view.update({name: clip(text, limit) for name, text in full.items()})
    view["clipped"] = {name: len(text) for name, text in full.items() if text is not None and len(text) > limit}
    view["stage"] = stage
    view["id"] = f"{stage}:{position}"
    view["segments"] = segments(view["completion"])
    parsed = summary(checked.completion)  # the whole completion: its answer may sit in the part clipped away
    view["parsed"] = {**parsed, "answer": clip(parsed["answer"], limit), "boxed": clip(parsed["boxed"], limit)}
    view["tool_calls"] = len(checked.tool_calls or [])
    view["images"] = [image_url(stage, path) for path in checked.images or []]
    view["teacher_strip"] = (None if checked.teacher_gaps is None
                             else gaps.strip(checked.token_texts, checked.teacher_gaps, limit))
    return view


def view_records(rows, image_url: Callable[[str, str], str]) -> list[dict]:
    """Views of `(stage, position, record)` rows for one reply, their text clipped to `text_limit(len(rows))`."""
    rows = list(rows)
    limit = text_limit(len(rows))
    return [view_record(record, stage, i, image_url, limit) for stage, i, record in rows]


def _answer_text(answer) -> str | None:
    """A reference answer as text: a string as it is, a number or anything structured as JSON."""
    if answer is None or isinstance(answer, str):
        return answer
    return json.dumps(answer, ensure_ascii=False)


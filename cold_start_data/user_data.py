"""Users' own rows (JSONL or Parquet) as tasks for the mixture.

A row has the conversation as `messages` (content a string or typed items; image items name a file in
`image`, video items a list of frame files in `video`), or `prompt` text with optional `images` (paths) and
`video` (frame paths); the gold `answer`; optional `kind` (verifier: math, count, boxes, text, order; default
math) and `mode`. If the conversation ends with an assistant turn, that is the response (verified like any
other); else a teacher writes one. Relative paths are read from the data file's directory.

Bad rows never stop a build: each becomes a `RowError` naming the file, line (Parquet: row), key and reason,
which the build report lists. `load_user_data(path, strict=True)` raises on the first one instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cold_start_data.tasks import KINDS, Solution, Task
from cold_start_data.verify import gold_problem
from keye_protocol.chat import Mode, content_items, parse_mode, parse_response, strip_mode_suffix


@dataclass
class RowError:
    file: str
    line: int
    key: str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: " + (f"'{self.key}': " if self.key else "") + self.reason


class UserDataError(ValueError):
    pass


@dataclass
class UserTask:
    task: Task
    mode: Mode
    response: str | None  # the row's own assistant turn, if it has one
    where: str  # "file:line"


@dataclass
class UserData:
    tasks: list[UserTask] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


class BadRow(Exception):
    """One row's problem: the key at fault (None: the row as a whole) and why."""

    def __init__(self, key: str | None, reason: str):
        super().__init__(reason)
        self.key, self.reason = key, reason


def read_rows(path: Path) -> list[tuple[int, Any]]:
    """(line or row number, parsed row or the JSON error) for every non-blank row."""
    if not path.exists():
        raise FileNotFoundError(f"user data file {path} not found")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(enumerate(pq.read_table(path).to_pylist(), start=1))
    rows = []
    for number, line in enumerate(path.read_text().split("\n"), start=1):  # not splitlines: U+2028 in strings
        if line.strip():
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                rows.append((number, BadRow(None, f"not valid JSON ({error.msg}, column {error.colno})")))
    return rows


def _file(value: Any, key: str, base: Path) -> str:
    if not isinstance(value, str) or not value:
        raise BadRow(key, f"expected a file path, got {value!r}")
    path = Path(value) if Path(value).is_absolute() else base / value
    if not path.is_file():
        raise BadRow(key, f"file not found: {path}")
    return str(path)


def row_messages(row: dict, base: Path) -> list[dict]:
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            raise BadRow("messages", "expected a non-empty list of {role, content} messages")
    elif "prompt" in row:
        # files are checked here so that errors name the row's own keys (images[1], video[0])
        items = [{"type": "image", "image": _file(p, f"images[{i}]", base)}
                 for i, p in enumerate(row.get("images") or [])]
        if row.get("video"):
            frames = [_file(f, f"video[{k}]", base) for k, f in enumerate(row["video"])]
            items.append({"type": "video", "video": frames, "fps": row.get("fps") or 2.0})
        messages = [{"role": "user", "content": items + [{"type": "text", "text": str(row["prompt"])}]}]
    else:
        raise BadRow("messages", f"a row needs 'messages' or 'prompt'; found keys {sorted(row)}")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise BadRow(f"messages[{i}]", "expected {role: system|user|assistant, content: ...}")
        items = []
        for j, item in enumerate(content_items(message)):
            key = f"messages[{i}].content[{j}]"
            if item.get("type") == "image":
                item = {"type": "image", "image": _file(item.get("image"), f"{key}.image", base)}
            elif item.get("type") == "video":
                frames = item.get("video")
                if not isinstance(frames, list) or not frames:
                    raise BadRow(f"{key}.video", "expected a list of frame image paths")
                item = {"type": "video", "video": [_file(f, f"{key}.video[{k}]", base) for k, f in enumerate(frames)],
                        "fps": float(item.get("fps") or 2.0)}
            elif item.get("type") != "text":
                raise BadRow(f"{key}.type", f"expected 'text', 'image' or 'video', got {item.get('type')!r}")
            items.append(item)
        out.append({"role": message["role"], "content": items})
    return out


def infer_mode(response: str) -> Mode:
    """The mode a response is written in."""
    parsed = parse_response(response)
    if parsed.analysis is not None:
        return Mode.AUTO_THINK
    if parsed.reasoned:
        return Mode.AGENTIC if parsed.code_blocks else Mode.THINK
    return Mode.NO_THINK


def parse_row(row: Any, base: Path, default_mode: str) -> tuple[Task, Mode, str | None]:
    if isinstance(row, BadRow):
        raise row
    if not isinstance(row, dict):
        raise BadRow(None, f"expected an object, got {type(row).__name__}")
    messages = row_messages(row, base)
    response = None
    if messages[-1]["role"] == "assistant":
        response = "".join(i.get("text") or "" for i in messages.pop()["content"] if i["type"] == "text")
    if not any(m["role"] == "user" for m in messages):
        raise BadRow("messages", "no user turn")
    kind = row.get("kind") or "math"
    if kind not in KINDS:
        raise BadRow("kind", f"unknown answer kind {kind!r}; valid kinds are {list(KINDS)}")
    if "answer" not in row or row["answer"] is None:
        raise BadRow("answer", "missing: every row needs the gold answer its response is verified against")
    answer = str(row["answer"]).strip()
    problem = gold_problem(kind, answer)
    if problem:
        raise BadRow("answer", problem)
    try:
        mode = parse_mode(row["mode"]) if row.get("mode") else (infer_mode(response) if response
                                                                   else parse_mode(default_mode))
    except ValueError as error:
        raise BadRow("mode", str(error)) from None
    user = [m for m in messages if m["role"] == "user"][-1]
    text = strip_mode_suffix("".join(i.get("text") or "" for i in user["content"] if i["type"] == "text"))
    images = [i["image"] for m in messages for i in m["content"] if i["type"] == "image"]
    final = answer if kind == "boxes" else f"\\boxed{{{answer}}}"
    task = Task("user", text, answer, kind, Solution([], final), images=images, chat=messages,
                meta={"row": row.get("id")})
    return task, mode, response


def load_user_data(path: str | Path, default_mode: str = "no_think", strict: bool = False) -> UserData:
    path = Path(path)
    out = UserData()
    for number, row in read_rows(path):
        try:
            task, mode, response = parse_row(row, path.parent, default_mode)
        except BadRow as bad:
            error = RowError(str(path), number, bad.key, bad.reason)
            if strict:
                raise UserDataError(str(error)) from None
            out.errors.append(error)
            continue
        task.source = f"user:{path.name}"
        out.tasks.append(UserTask(task, mode, response, f"{path}:{number}"))
    return out

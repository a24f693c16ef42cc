"""Shards: pre-training examples as JSONL rows with image files beside them, the format users' data takes too.

A row is a two-turn chat plus what an evaluation needs:
`{"id", "task", "kind", "answer", "messages": [user turn with image/video items, assistant turn]}`. Image items
hold paths relative to the shard's directory (`{"type": "image", "image": "images/x.png"}`; a video is
`{"type": "video", "video": [frame paths], "fps": 2.0}`); reading a shard resolves them. Parquet files with the
same columns (`messages` as JSON text or nested) read the same way. This module knows nothing about training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from PIL import Image

from pretrain_data.tasks import Example

REQUIRED = ("task", "messages")


def example_row(example: Example, example_id: str, images_dir: Path) -> dict:
    """Write the example's pixels under `images_dir` and return its row (paths relative to the shard dir)."""
    items: list[dict] = []
    for k, image in enumerate(example.images):
        items.append({"type": "image", "image": _save(image, images_dir / f"{example_id}-{k}.png")})
    if example.video is not None:
        frames = [_save(Image.fromarray(f), images_dir / f"{example_id}-f{k}.png") for k, f in enumerate(example.video)]
        items.append({"type": "video", "video": frames, "fps": example.fps})
    items.append({"type": "text", "text": example.prompt})
    return {"id": example_id, "task": example.task, "kind": example.kind, "answer": example.answer,
            "messages": [{"role": "user", "content": items}, {"role": "assistant", "content": example.target}]}


def _save(image: Image.Image, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return f"{path.parent.name}/{path.name}"


def write_shard(rows: Iterable[dict], path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    count = 0
    with temp.open("w") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
            count += 1
    temp.replace(path)  # a shard is whole or absent
    return count


def read_shard(path: str | Path) -> list[dict]:
    """Rows of a JSONL or Parquet shard with absolute image paths; errors name the file, row and key."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pre-training shard {path} not found")
    raw = _parquet_rows(path) if path.suffix == ".parquet" else _jsonl_rows(path)
    return [_checked(row, f"{path}:{where}", path.parent) for where, row in raw]


def _jsonl_rows(path: Path):
    for line_no, line in enumerate(path.read_text().split("\n"), start=1):  # not splitlines: U+2028 in strings
        if line.strip():
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({error.msg})") from None


def _parquet_rows(path: Path):
    import pyarrow.parquet as pq

    for index, row in enumerate(pq.read_table(path).to_pylist(), start=1):
        if isinstance(row.get("messages"), str):
            row["messages"] = json.loads(row["messages"])
        yield f"row {index}", row


def _checked(row: Any, where: str, root: Path) -> dict:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a shard row must be an object with {list(REQUIRED)}, got {type(row).__name__}")
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        raise ValueError(f"{where}: row lacks {missing} (has {sorted(row)})")
    messages = row["messages"]
    if not isinstance(messages, list) or len(messages) < 2 or messages[-1].get("role") != "assistant":
        raise ValueError(f"{where}: 'messages' must end with the assistant's target turn")
    return {**row, "messages": [_resolved(m, root, where) for m in messages]}


def _resolved(message: dict, root: Path, where: str) -> dict:
    content = message.get("content")
    if isinstance(content, str):
        return message
    items = []
    for item in content:
        if item.get("type") == "image":
            item = {**item, "image": _path(item["image"], root, where)}
        elif item.get("type") == "video":
            item = {**item, "video": [_path(f, root, where) for f in item["video"]]}
        items.append(item)
    return {**message, "content": items}


def _path(value: str, root: Path, where: str) -> str:
    path = (Path(value) if Path(value).is_absolute() else root / value).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{where}: image {value} not found (looked for {path})")
    return str(path)


def image_paths(row: dict) -> list[str]:
    """Every image file a row shows (video frames included), in order."""
    paths = []
    for message in row["messages"]:
        for item in message["content"] if isinstance(message["content"], list) else []:
            if item.get("type") == "image":
                paths.append(item["image"])
            elif item.get("type") == "video":
                paths.extend(item["video"])
    return paths

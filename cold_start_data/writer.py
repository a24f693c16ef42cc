"""Writing the mixture as a Hugging Face dataset: Parquet and JSONL with the same rows, media as PNG files.

Layout of the output directory:
    data/train.parquet, data/train.jsonl   one row per sample (schema `FEATURES`)
    media/<id>/<k>.png                     prompt images, sandbox images, video frames (by record id)
    eval.jsonl (+ media/eval-*)            the held-out prompts the mixture was decontaminated against
Paths in rows are relative to the output directory (`load_mixture` makes them absolute), so the directory
can be moved. Every content item carries all item keys (unused ones null) so Arrow sees one schema.
Writing is deterministic: same records, same bytes. This module knows nothing about how records were made.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cold_start_data.records import Record

ITEM = {"type": "string", "text": "string", "image": "string", "video": ["string"], "fps": "float64"}


def features():
    from datasets import Features, List, Value

    item = {"type": Value("string"), "text": Value("string"), "image": Value("string"),
            "video": List(Value("string")), "fps": Value("float64")}
    return Features({
        "id": Value("string"), "bucket": Value("string"), "mode": Value("string"), "source": Value("string"),
        "teacher": Value("string"), "messages": List({"role": Value("string"), "content": List(item)}),
        "response": Value("string"), "answer": Value("string"), "kind": Value("string"),
        "verified": Value("bool"), "flawed": Value("bool"), "reasoned": Value("bool"),
        "images": List(Value("string")), "video": Value("bool"),
    })


class MediaWriter:
    """Saves images and frames as PNG under `out/media/<owner>/` and returns their relative paths."""

    def __init__(self, out: Path):
        self.out = out

    def save(self, obj: Any, owner: str, name: str) -> str:
        rel = Path("media") / owner / f"{name}.png"
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(obj, np.ndarray):
            image = Image.fromarray(obj)
        elif isinstance(obj, Image.Image):
            image = obj
        else:  # a path (user data): re-encoded, so the dataset owns a copy
            with Image.open(obj) as opened:
                image = opened.convert("RGB")
        image.convert("RGB").save(path, format="PNG")
        return rel.as_posix()

    def content(self, items: list[dict], owner: str, counter: list[int]) -> list[dict]:
        out = []
        for item in items:
            row = {key: None for key in ITEM}
            row["type"] = item["type"]
            if item["type"] == "text":
                row["text"] = item["text"]
            elif item["type"] == "image":
                row["image"] = self.save(item["image"], owner, str(counter[0]))
                counter[0] += 1
            else:
                frames = []
                for frame in item["video"]:
                    frames.append(self.save(frame, owner, str(counter[0])))
                    counter[0] += 1
                row["video"], row["fps"] = frames, float(item.get("fps") or 2.0)
            out.append(row)
        return out


@contextmanager
def quiet_datasets():
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_quiet = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_quiet:
            enable_progress_bars()


def record_row(record: Record, media: MediaWriter) -> dict:
    counter = [0]
    messages = [{"role": m["role"], "content": media.content(m["content"], record.id, counter)}
                for m in record.messages]
    prompt_images = [i["image"] for m in messages if m["role"] != "assistant" for i in m["content"]
                     if i["type"] == "image"]
    has_video = any(i["type"] == "video" for m in messages for i in m["content"])
    return {"id": record.id, "bucket": record.bucket, "mode": record.mode, "source": record.source,
            "teacher": record.teacher, "messages": messages, "response": record.response, "answer": record.answer,
            "kind": record.kind, "verified": record.verified, "flawed": record.flawed, "reasoned": record.reasoned,
            "images": prompt_images, "video": has_video}


def write_dataset(records: list[Record], out: Path) -> list[dict]:
    """Write data/train.{parquet,jsonl} and the media; returns the rows."""
    from datasets import Dataset

    media = MediaWriter(out)
    rows = [record_row(r, media) for r in records]
    (out / "data").mkdir(parents=True, exist_ok=True)
    with quiet_datasets():  # the build has its own progress bar
        Dataset.from_list(rows, features=features()).to_parquet(str(out / "data" / "train.parquet"))
    # JSONL written directly: the same rows, without pandas' escaped slashes ("media\\/...")
    write_jsonl(rows, out / "data" / "train.jsonl", sort_keys=False)
    return rows


def write_jsonl(rows: list[dict], path: Path, sort_keys: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=sort_keys) + "\n")


def load_mixture(out: str | Path):
    """The built mixture (Parquet) as a `datasets.Dataset`, media paths made absolute."""
    from datasets import Dataset

    out = Path(out).resolve()
    with quiet_datasets():
        data = Dataset.from_parquet(str(out / "data" / "train.parquet"), keep_in_memory=True)

    def absolute(row: dict) -> dict:
        for message in row["messages"]:
            for item in message["content"]:
                if item["image"]:
                    item["image"] = str(out / item["image"])
                if item["video"]:
                    item["video"] = [str(out / f) for f in item["video"]]
        row["images"] = [str(out / p) for p in row["images"]]
        return row

    with quiet_datasets():
        return data.map(absolute, keep_in_memory=True)

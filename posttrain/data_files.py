"""Your data files, in the formats Hugging Face users keep them in, read into the toolkit's rows.

A file is JSONL (`.jsonl`/`.json` lines), Parquet (`.parquet`) or a directory written by `datasets`'
`save_to_disk` (a `DatasetDict` directory too: `split` picks one, default "train"). `columns` maps the toolkit's
names to yours (`{prompt: question, answer: solution}`): each of yours is renamed, the other columns travel
unchanged (a reward can read any column of its row). Images a `datasets` `Image` column holds as bytes are
written out as PNG files beside the run's data, since every row on disk names its images by path.

A data file is `os.stat`ed before anything opens it: one that is a FIFO or a device (a symlink to `/dev/zero`) is
refused, where opening it would wait for a writer or read for ever and the run would never start.

Errors name the file, the row and the column, and say what a row needs: `messages` a list of message objects,
`images` a list, each image it names by path a regular file PIL can read (stat first: a FIFO would stall the
run's start), each image held as bytes decodable. Nothing here knows about stages: the run copies these rows
once into `runs/<name>/data/*.jsonl`, which every stage then reads.
"""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path
from typing import Any

from keye_protocol.chat import parse_mode

# what a row needs, per data file of the recipe
REQUIRED = {"sft": ("messages",), "prompts": ("prompt|messages",), "eval": ("prompt|messages",)}


def read_rows(path: str | Path, columns: dict[str, str] | None = None, split: str = "train") -> list[dict]:
    """The rows of `path` with `columns` (toolkit name -> your column) renamed to the toolkit's names."""
    path = Path(path)
    check_data_path(path)
    return renamed(_read_any(path, split), columns, path)


def peek_rows(path: str | Path, columns: dict[str, str] | None = None, split: str = "train",
              limit: int = 1000) -> list[dict]:
    """The first `limit` rows of `path`, renamed as `read_rows` renames them, without reading the rest: what
    `validate` checks (a file of millions of rows stays quick to validate; the run's copy checks every row)."""
    path = Path(path)
    check_data_path(path)
    if path.is_dir():
        dataset = _saved_split(path, split)
        return renamed([dict(row) for row in dataset.select(range(min(limit, len(dataset))))], columns, path)
    if path.suffix == ".parquet":
        first = next(_parquet(path).iter_batches(batch_size=limit), None)
        return renamed(first.to_pylist() if first is not None else [], columns, path)
    if path.suffix in (".jsonl", ".json"):
        return renamed(read_jsonl(path, limit=limit), columns, path)
    return read_rows(path, columns, split)  # not a format: read_rows says which ones are


def read_jsonl(path: str | Path, required: tuple[str, ...] = (), limit: int | None = None) -> list[dict]:
    """Rows of a JSONL file (the first `limit` of them: `validate` peeks at a large file); errors name the file,
    the line and the missing key."""
    path = Path(path)
    check_data_path(path)  # a FIFO or a device is refused before open() waits on it
    rows = []
    with open(path, encoding="utf-8") as lines:
        for line_no, line in enumerate(lines, start=1):
            if limit is not None and len(rows) >= limit:
                break
            if line.strip():
                rows.append(_row(line, path, line_no, required))
    return rows


def _row(line: str, path: Path, line_no: int, required: tuple[str, ...]) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{line_no}: not valid JSON ({error.msg})") from None
    except RecursionError:
        raise ValueError(f"{path}:{line_no}: nested too deeply to read as JSON") from None
    if not isinstance(row, dict):
        raise ValueError(f"{path}:{line_no}: a row must be a JSON object ({{\"prompt\": ...}}), got "
                         f"{type(row).__name__}")
    missing = [k for k in required if k not in row]
    if missing:
        raise ValueError(f"{path}:{line_no}: row lacks {missing} (has {sorted(row)})")
    return row


def count_rows(path: str | Path, split: str = "train") -> int:
    """How many rows `read_rows` would return, from the file's metadata or its lines (an SFT stage's length)."""
    path = Path(path)
    check_data_path(path)
    if path.is_dir():
        return len(_saved_split(path, split))
    if path.suffix == ".parquet":
        return _parquet(path).metadata.num_rows
    with open(path, "rb") as lines:
        return sum(1 for line in lines if line.strip())


def check_data_path(path: str | Path, key: str | None = None) -> None:
    """`path` is a regular file or a directory (a `datasets` one), told by `os.stat` without opening it: opening a
    FIFO waits for a writer, reading a device may never end. `key` (`data.prompts`) starts the message."""
    where = f"{key}: " if key else ""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise FileNotFoundError(f"{where}data file {path} not found ({error.strerror})") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ValueError(f"{where}data file {path} is {_file_kind(mode)}, not a file; give a .jsonl or .parquet "
                         f"file or a directory saved by datasets' save_to_disk")


def renamed(rows: list[dict], columns: dict[str, str] | None, path: Path) -> list[dict]:
    """`rows` with each of your columns renamed to the toolkit's name `columns` maps it to; a mapped column the
    first row lacks is an error naming the columns the file has."""
    mapping = columns or {}
    if rows and mapping:
        missing = [yours for yours in mapping.values() if yours not in rows[0]]
        if missing:
            raise ValueError(f"{path}: column(s) {missing} named in data.columns not found; the file has "
                             f"{sorted(rows[0])}")
    to_ours = {yours: ours for ours, yours in mapping.items()}
    return [{to_ours.get(key, key): value for key, value in row.items()} for row in rows]


def check_rows(rows: list[dict], path: Path, role: str) -> None:
    """Every row has what the stage reading `role` needs, well-formed `messages` and `images` and a valid `mode`
    (or none); the error names the first row that does not, here rather than in a rollout worker or a learner
    after the cluster started."""
    for index, row in enumerate(rows, start=1):
        for need in REQUIRED[role]:
            options = need.split("|")
            if not any(row.get(o) is not None for o in options):
                wanted = " or ".join(repr(o) for o in options)
                raise ValueError(f"{path} row {index}: a {role} row needs {wanted} (has {sorted(row)}); map your "
                                 f"column with data.columns, e.g. columns: {{{options[0]}: your_column}}")
        if row.get("messages") is not None:  # else a prompt row with a `prompt`
            check_messages(row["messages"], f"{path} row {index}", role)
        check_images(row, f"{path} row {index}")
        if row.get("mode") is not None:
            try:
                parse_mode(row["mode"])
            except ValueError as error:
                raise ValueError(f"{path} row {index}: {error}; fix the row's 'mode' or leave it out "
                                 f"(auto_think)") from None


def check_messages(messages: Any, where: str, role: str) -> None:
    """`messages` is a non-empty list of {"role", "content"} objects, and an SFT row's last one is the
    assistant's answer: a string would otherwise be read one character per message, deep in a stage."""
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m
                                                                  for m in messages):
        raise ValueError(f"{where}: 'messages' must be a non-empty list of {{\"role\": ..., \"content\": ...}} "
                         f"objects, got {type(messages).__name__} {messages!r:.60}; write it as "
                         f"[{{\"role\": \"user\", \"content\": \"...\"}}, {{\"role\": \"assistant\", "
                         f"\"content\": \"...\"}}]")
    if role == "sft" and messages[-1]["role"] != "assistant":
        raise ValueError(f"{where}: an SFT row's last message must be the assistant's answer (role 'assistant'), "
                         f"got role {messages[-1]['role']!r}; end the row with the answer to train on")


def check_images(row: dict, where: str) -> None:
    """`images` is a list, and every image the row names by path is a regular file PIL can identify. A bare
    string would be read one character per image; a FIFO or a device would block the first read for ever."""
    if isinstance(row.get("images"), str):
        shown = json.dumps(row["images"])[:80]
        raise ValueError(f"{where}: 'images' must be a list, got the string {shown}, which would be read one "
                         f"character per image; write \"images\": [{shown}]")
    for key, path in image_paths(row):
        check_image_file(path, f"{where} {key}")


def image_paths(row: dict) -> list[tuple[str, str]]:
    """(key, path) of every image the row names by path: under `images`/`image`, and in its messages' image
    and video items (an image a `datasets` column holds as bytes is checked when it is decoded: `save_images`)."""
    images = row.get("images") if isinstance(row.get("images"), list) else []  # else one `datasets` image
    found = [(f"images[{k}]", p) for k, p in enumerate(images) if isinstance(p, str)]
    found += [("image", row["image"])] if isinstance(row.get("image"), str) else []
    for i, message in enumerate(row.get("messages") or []):  # a list of objects: `check_messages` ran first
        content = message.get("content")
        for j, item in enumerate(content if isinstance(content, list) else []):
            key = f"messages[{i}].content[{j}]"
            if isinstance(item, dict) and isinstance(item.get("image"), str):
                found.append((f"{key}.image", item["image"]))
            if isinstance(item, dict) and isinstance(item.get("video"), list):
                found += [(f"{key}.video[{k}]", f) for k, f in enumerate(item["video"]) if isinstance(f, str)]
    return found


def check_image_file(path: str, where: str) -> None:
    """`path` is a regular file whose header PIL reads as an image. Its kind is checked with `os.stat` before
    anything opens it: opening a FIFO waits for a writer, reading a device may never end."""
    from PIL import Image

    try:
        info = os.stat(path)
    except OSError as error:
        raise ValueError(f"{where}: image {path} cannot be read ({error.strerror}); fix the path (a relative "
                         f"one is read from the working directory)") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{where}: image {path} is {_file_kind(info.st_mode)}, not a regular file; give the "
                         f"path of an image file")
    try:
        with Image.open(path):  # the header only: the pixels are decoded where the image is used
            pass
    except (OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"{where}: image {path} is not a readable image ({error}); replace the file or drop "
                         f"the image") from None


def _file_kind(mode: int) -> str:
    kinds = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISCHR: "a character device",
             stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


def save_images(rows: list[dict], out: Path, stem: str, source: Path) -> int:
    """Write image bytes (a `datasets` Image column: PIL images or {"bytes", "path"}) as PNG files under `out`
    and put their paths in the rows; returns how many were written. Errors name `source`, the row and the image."""
    written = 0
    for index, row in enumerate(rows):
        images = row.get("images")
        if images is None:
            continue
        if not isinstance(images, list):
            images = [images]
        paths = []
        for k, image in enumerate(images):
            if isinstance(image, str):
                paths.append(image)
                continue
            out.mkdir(parents=True, exist_ok=True)
            file = out / f"{stem}-{index}-{k}.png"
            _as_pil(image, f"{source} row {index + 1} images[{k}]").save(file)
            paths.append(str(file))
            written += 1
        row["images"] = paths
    return written


def _read_any(path: Path, split: str) -> list[dict]:
    if path.is_dir():
        return _read_saved_dataset(path, split)
    if not path.exists():
        raise FileNotFoundError(f"data file {path} not found")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as error:  # pyarrow's errors do not name the file
            raise ValueError(f"{path}: not a readable Parquet file ({error})") from None
    if path.suffix in (".jsonl", ".json"):
        return read_jsonl(path)
    raise ValueError(f"{path}: unknown data format {path.suffix!r}; give a .jsonl, a .parquet or a directory "
                     f"saved by datasets' save_to_disk")


def _read_saved_dataset(path: Path, split: str) -> list[dict]:
    return [dict(row) for row in _saved_split(path, split)]


def _saved_split(path: Path, split: str):
    """The `datasets.Dataset` saved in `path` (memory-mapped: nothing is read until a row is)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is a directory but not one saved by datasets' save_to_disk "
                                f"(no dataset_info.json / dataset_dict.json)") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ValueError(f"{path}: no split {split!r} (has {sorted(loaded)}); set data.split")
        loaded = loaded[split]
    return loaded


def _parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as error:  # pyarrow's errors do not name the file
        raise ValueError(f"{path}: not a readable Parquet file ({error})") from None


def _as_pil(image: Any, where: str):
    """`image` decoded whole, so that bytes that are no image fail here, naming `where`, not in PIL's save."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if isinstance(image, dict) and image.get("bytes"):
        opened, what = io.BytesIO(image["bytes"]), f"its {len(image['bytes'])} bytes are"
    elif isinstance(image, dict) and image.get("path"):
        check_image_file(image["path"], where)
        opened, what = image["path"], f"{image['path']} is"
    else:
        raise ValueError(f"{where}: an image must be a path, a PIL image or {{'bytes': ...}}, got "
                         f"{type(image).__name__}")
    try:
        decoded = Image.open(opened)
        decoded.load()
    except (OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"{where}: {what} not a decodable image ({error}); fix or drop the row's image") from None
    return decoded

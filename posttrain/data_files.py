"""Your data files, in the formats Hugging Face users keep them in, read into the toolkit's rows.

A file is JSONL (`.jsonl`/`.json` lines), Parquet (`.parquet`) or a directory written by `datasets`'
`save_to_disk` (a `DatasetDict` directory too: `split` picks one, default "train"). `columns` maps the toolkit's
names to yours (`{prompt: question, answer: solution}`): each of yours is renamed, the other columns travel
unchanged (a reward can read any column of its row). Images a `datasets` `Image` column holds as bytes are
written out as PNG files beside the run's data, since every row on disk names its images by path.

Errors name the file, the row and the column, and say what a row needs. Nothing here knows about stages: the
run copies these rows once into `runs/<name>/data/*.jsonl`, which every stage then reads.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

# what a row needs, per data file of the recipe
REQUIRED = {"sft": ("messages",), "prompts": ("prompt|messages",), "eval": ("prompt|messages",)}


def read_rows(path: str | Path, columns: dict[str, str] | None = None, split: str = "train") -> list[dict]:
    """The rows of `path` with `columns` (toolkit name -> your column) renamed to the toolkit's names."""
    path = Path(path)
    rows = _read_any(path, split)
    mapping = columns or {}
    if rows and mapping:
        missing = [yours for yours in mapping.values() if yours not in rows[0]]
        if missing:
            raise ValueError(f"{path}: column(s) {missing} named in data.columns not found; the file has "
                             f"{sorted(rows[0])}")
    renamed = {yours: ours for ours, yours in mapping.items()}
    return [{renamed.get(key, key): value for key, value in row.items()} for row in rows]


def check_rows(rows: list[dict], path: Path, role: str) -> None:
    """Every row has what the stage reading `role` needs; the error names the first row that does not."""
    for index, row in enumerate(rows, start=1):
        for need in REQUIRED[role]:
            options = need.split("|")
            if not any(row.get(o) is not None for o in options):
                wanted = " or ".join(repr(o) for o in options)
                raise ValueError(f"{path} row {index}: a {role} row needs {wanted} (has {sorted(row)}); map your "
                                 f"column with data.columns, e.g. columns: {{{options[0]}: your_column}}")


def save_images(rows: list[dict], out: Path, stem: str) -> int:
    """Write image bytes (a `datasets` Image column: PIL images or {"bytes", "path"}) as PNG files under `out`
    and put their paths in the rows; returns how many were written."""
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
            _as_pil(image, f"row {index + 1}").save(file)
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
        from posttrain.sft_data import read_jsonl

        return read_jsonl(path)
    raise ValueError(f"{path}: unknown data format {path.suffix!r}; give a .jsonl, a .parquet or a directory "
                     f"saved by datasets' save_to_disk")


def _read_saved_dataset(path: Path, split: str) -> list[dict]:
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
    return [dict(row) for row in loaded]


def _as_pil(image: Any, where: str):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if isinstance(image, dict) and image.get("bytes"):
        return Image.open(io.BytesIO(image["bytes"]))
    if isinstance(image, dict) and image.get("path"):
        return Image.open(image["path"])
    raise ValueError(f"{where}: an image must be a path, a PIL image or {{'bytes': ...}}, got "
                     f"{type(image).__name__}")

"""User data in JSONL, Parquet and `datasets` directories, with column mapping, copied into a run's data."""

import io
import json
import os

import datasets
import pytest
from PIL import Image
from rich.console import Console

from posttrain.data import prepare_data
from posttrain.data_files import check_rows, read_rows, save_images
from posttrain.recipe import Recipe

ROWS = [{"question": "What is 2 + 3?", "solution": "5", "level": 1},
        {"question": "What is 4 + 4?", "solution": "8", "level": 2}]
MAPPING = {"prompt": "question", "answer": "solution"}
EXPECTED = [{"prompt": "What is 2 + 3?", "answer": "5", "level": 1},
            {"prompt": "What is 4 + 4?", "answer": "8", "level": 2}]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "saved", "saved_dict"])
def test_every_format_reads_the_same_rows_with_columns_renamed(tmp_path, fmt):
    dataset = datasets.Dataset.from_list(ROWS)
    if fmt == "jsonl":
        path = _jsonl(tmp_path / "rows.jsonl", ROWS)
    elif fmt == "parquet":
        path = tmp_path / "rows.parquet"
        dataset.to_parquet(str(path))
    elif fmt == "saved":
        path = tmp_path / "saved"
        dataset.save_to_disk(str(path))
    else:
        path = tmp_path / "saved_dict"
        datasets.DatasetDict({"train": dataset, "test": dataset.select([0])}).save_to_disk(str(path))
    assert read_rows(path, MAPPING) == EXPECTED
    if fmt == "saved_dict":
        assert read_rows(path, MAPPING, split="test") == EXPECTED[:1]
        with pytest.raises(ValueError, match=r"no split 'validation' \(has \['test', 'train'\]\); set data.split"):
            read_rows(path, MAPPING, split="validation")


def test_a_mapped_column_the_file_lacks_is_named_with_the_columns_it_has(tmp_path):
    path = _jsonl(tmp_path / "rows.jsonl", ROWS)
    with pytest.raises(ValueError, match=r"rows.jsonl: column\(s\) \['problem'\] named in data.columns not found; "
                                         r"the file has \['level', 'question', 'solution'\]"):
        read_rows(path, {"prompt": "problem"})


def test_a_row_without_a_prompt_names_the_file_the_row_and_the_mapping_fix(tmp_path):
    rows = read_rows(_jsonl(tmp_path / "rows.jsonl", ROWS))  # no mapping: no 'prompt' column
    with pytest.raises(ValueError, match=r"rows.jsonl row 1: a prompts row needs 'prompt' or 'messages' .*"
                                         r"columns: \{prompt: your_column\}"):
        check_rows(rows, tmp_path / "rows.jsonl", "prompts")
    check_rows(read_rows(tmp_path / "rows.jsonl", MAPPING), tmp_path / "rows.jsonl", "prompts")


def test_unknown_formats_and_plain_directories_are_refused_with_the_formats_accepted(tmp_path):
    (tmp_path / "rows.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"unknown data format '.csv'; give a .jsonl, a .parquet or a directory"):
        read_rows(tmp_path / "rows.csv")
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match="is a directory but not one saved by datasets' save_to_disk"):
        read_rows(tmp_path / "plain")


NOT_A_FILE = {"fifo": "a FIFO \\(named pipe\\)", "device": "a character device"}


def _not_a_file(path, kind):
    if kind == "fifo":
        os.mkfifo(path)  # opening it for reading waits for a writer: the run would never start
    else:
        path.symlink_to("/dev/null")  # os.stat follows it to the device (/dev/zero would be read for ever)
    return path


@pytest.mark.timeout(20)  # before the check, open() on the FIFO waited for ever
@pytest.mark.parametrize("kind", NOT_A_FILE)
def test_a_data_file_that_is_a_fifo_or_a_device_is_refused_at_run_start_without_opening_it(tmp_path, kind):
    from posttrain.data_files import count_rows, peek_rows, read_jsonl

    path = _not_a_file(tmp_path / "prompts.jsonl", kind)
    recipe = Recipe.model_validate({"name": "fifo", "runs_dir": str(tmp_path / "runs"),
                                    "data": {"kind": "files", "prompts": str(path)},
                                    "stages": [{"kind": "rl", "steps": 1}]})
    message = rf"data file {path} is {NOT_A_FILE[kind]}, not a file; give a .jsonl or .parquet file or a directory"
    with pytest.raises(ValueError, match=rf"^data.prompts: {message}"):
        prepare_data(recipe, Console(file=io.StringIO()))
    for read in (read_rows, peek_rows, count_rows, read_jsonl):  # every reader, for callers that know no key
        with pytest.raises(ValueError, match=rf"^{message}"):
            read(path)


@pytest.mark.timeout(20)
def test_a_rerun_whose_data_file_became_a_fifo_is_refused_without_opening_it(tmp_path):
    path = _jsonl(tmp_path / "rows.jsonl", ROWS)
    recipe = Recipe.model_validate({
        "name": "fifo", "runs_dir": str(tmp_path / "runs"),
        "data": {"kind": "files", "eval": str(path), "columns": MAPPING}, "stages": [{"kind": "rl", "steps": 1}]})
    console = Console(file=io.StringIO())
    prepare_data(recipe, console)
    path.unlink()
    _not_a_file(path, "fifo")  # the digest of the source, compared on every rerun, would open it
    with pytest.raises(ValueError, match=rf"^data.eval: data file {path} is a FIFO \(named pipe\), not a file"):
        prepare_data(recipe, console)


def test_image_bytes_become_png_files_the_rows_name(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (5, 3), (255, 0, 0)).save(buffer, format="PNG")
    rows = [{"prompt": "red?", "images": [{"bytes": buffer.getvalue(), "path": None}, "kept.png"]},
            {"prompt": "none"}]
    assert save_images(rows, tmp_path / "images", "eval", tmp_path / "eval.parquet") == 1
    written = tmp_path / "images" / "eval-0-0.png"
    assert rows[0]["images"] == [str(written), "kept.png"] and "images" not in rows[1]
    assert Image.open(written).size == (5, 3)


def test_a_recipe_maps_a_parquet_file_into_the_runs_data(tmp_path):
    path = tmp_path / "rows.parquet"
    datasets.Dataset.from_list(ROWS).to_parquet(str(path))
    recipe = Recipe.model_validate({
        "name": "mapped", "runs_dir": str(tmp_path / "runs"),
        "data": {"kind": "files", "prompts": str(path), "eval": str(path), "columns": MAPPING},
        "stages": [{"kind": "rl", "steps": 1}]})
    out = prepare_data(recipe, Console(file=io.StringIO()))
    for name in ("prompts", "eval"):
        assert [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()] == EXPECTED


def test_a_recipe_refuses_a_mapping_to_a_name_the_toolkit_does_not_read():
    with pytest.raises(Exception, match="columns"):
        Recipe.model_validate({"name": "x", "data": {"kind": "files", "columns": {"question": "q"}},
                               "stages": [{"kind": "rl", "steps": 1}]})


@pytest.mark.parametrize("fmt", ["jsonl", "saved"])
def test_a_rerun_whose_data_file_changed_stops_instead_of_training_on_the_old_copy(tmp_path, fmt):
    from posttrain.stage_settings import StageSettingsChanged

    path = tmp_path / ("rows.jsonl" if fmt == "jsonl" else "rows")
    write = (lambda rows: _jsonl(path, rows)) if fmt == "jsonl" else \
        (lambda rows: datasets.Dataset.from_list(rows).save_to_disk(str(path)))
    write(ROWS)
    recipe = Recipe.model_validate({
        "name": "changed", "runs_dir": str(tmp_path / "runs"),
        "data": {"kind": "files", "prompts": str(path), "columns": MAPPING}, "stages": [{"kind": "rl", "steps": 1}]})
    console = Console(file=io.StringIO())
    out = prepare_data(recipe, console)
    assert prepare_data(recipe, console) == out  # unchanged: the copy is reused
    write([{**ROWS[0], "solution": "6"}, ROWS[1]])  # the user fixes a row
    with pytest.raises(StageSettingsChanged, match=rf"data file {path} changed since this run copied it into "
                                                   rf"{out}.*override `name=...`.*delete {out}"):
        prepare_data(recipe, console)
    assert [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()] == EXPECTED  # kept


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "saved"])
def test_validate_peeks_at_the_first_rows_and_counts_them_without_reading_the_rest(tmp_path, fmt):
    from posttrain.data_files import count_rows, peek_rows

    rows = ROWS * 3
    path = tmp_path / {"jsonl": "rows.jsonl", "parquet": "rows.parquet", "saved": "saved"}[fmt]
    if fmt == "jsonl":
        _jsonl(path, rows)
    elif fmt == "parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    else:
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    assert peek_rows(path, MAPPING, limit=3) == (EXPECTED * 2)[:3]
    assert count_rows(path) == 6


def test_a_row_with_an_unknown_mode_is_refused_when_the_data_is_copied(tmp_path):
    rows = read_rows(_jsonl(tmp_path / "rows.jsonl", [{**ROWS[0], "mode": "/think"}, {**ROWS[1], "mode": "deep"}]),
                     MAPPING)
    with pytest.raises(ValueError, match=r"rows.jsonl row 2: unknown chat mode 'deep'; valid modes are"):
        check_rows(rows, tmp_path / "rows.jsonl", "prompts")

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cold_start_data.build import build
from cold_start_data.config import BuildConfig
from cold_start_data.user_data import UserDataError, infer_mode, load_user_data
from cold_start_data.writer import load_mixture

THINK = "<think>2 + 3 = 5</think><answer>\\boxed{5}</answer>"


@pytest.fixture()
def data_file(tmp_path):
    Image.new("RGB", (56, 56), "red").save(tmp_path / "red.png")
    rows = [
        {"prompt": "What colour is the square?", "images": ["red.png"], "answer": "red", "kind": "text",
         "mode": "no_think"},
        {"messages": [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": THINK}],
         "answer": "5"},
        {"prompt": "What is shown?", "images": ["red.png", "missing.png"], "answer": "1"},
        {"prompt": "What is 1/2 + ?", "answer": "\\frac{1}{"},
        {"prompt": "What is 2 + 2?", "answer": "4", "mode": "thinking"},
        "not json",
        {"prompt": "What is 9 + 1?"},
        {"messages": [{"role": "user", "content": "What is 3 + 3?"},
                      {"role": "assistant", "content": "<think>3+3=7</think><answer>\\boxed{7}</answer>"}],
         "answer": "6"},
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_bad_rows_are_named_by_file_line_and_key(data_file):
    data = load_user_data(data_file)
    assert [t.where for t in data.tasks] == [f"{data_file}:1", f"{data_file}:2", f"{data_file}:8"]
    errors = {e.line: e for e in data.errors}
    assert sorted(errors) == [3, 4, 5, 6, 7]
    assert errors[3].key == "images[1]" and errors[3].reason.startswith("file not found:")
    assert errors[4].key == "answer" and "cannot parse" in errors[4].reason
    assert errors[5].key == "mode" and "unknown chat mode 'thinking'" in errors[5].reason
    assert errors[6].key is None and errors[6].reason.startswith("not valid JSON")
    assert errors[7].key == "answer" and errors[7].reason.startswith("missing")
    assert str(errors[3]).startswith(f"{data_file}:3: 'images[1]': file not found")


def test_strict_loading_raises_the_first_error(data_file):
    with pytest.raises(UserDataError, match=r"mine.jsonl:3: 'images\[1\]'"):
        load_user_data(data_file, strict=True)


def test_modes_come_from_the_row_or_its_response(data_file):
    tasks = load_user_data(data_file).tasks
    assert [t.mode.value for t in tasks] == ["no_think", "think", "think"]
    assert tasks[1].response == THINK
    assert infer_mode("<analysis>a</analysis><answer>1</answer>").value == "auto_think"
    assert infer_mode("<think>```python\nprint(1)\n```</think><answer>1</answer>").value == "agentic"


def test_parquet_rows_are_numbered(tmp_path):
    table = pa.table({"prompt": ["What is 1 + 1?", "What is 2 + 2?"], "answer": ["2", None]})
    pq.write_table(table, tmp_path / "rows.parquet")
    data = load_user_data(tmp_path / "rows.parquet")
    assert len(data.tasks) == 1
    assert (data.errors[0].line, data.errors[0].key) == (2, "answer")


def test_build_keeps_good_rows_and_reports_bad_ones(data_file, tmp_path):
    config = BuildConfig(size=12, seed=1, eval_size=0, user_data=[data_file], video_share=0.0,
                         proportions={"no_think": 0.5, "think": 0.5})
    report = build(config, tmp_path / "out")
    lines = sorted(e["line"] for e in report["user_data"]["errors"])
    assert lines == [3, 4, 5, 6, 7]
    rejected = report["user_data"]["rejected"]
    assert [(r["where"], r["reason"]) for r in rejected] == [(f"{data_file}:8", "wrong answer: user")]
    mixture = load_mixture(tmp_path / "out")
    assert len(mixture) == 12
    user = [row for row in mixture if row["source"] == "user:mine.jsonl"]
    assert sorted(row["response"] for row in user) == sorted([THINK, "\\boxed{red}"])
    image_row = next(row for row in user if row["images"])
    assert Image.open(image_row["images"][0]).getpixel((0, 0)) == (255, 0, 0)
    assert "## User rows rejected" in (tmp_path / "out" / "report" / "report.md").read_text()

"""Shards round-trip (JSONL and Parquet), every task draws verifiable examples, and bad rows are named."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keye_protocol.grounding import parse_boxes
from pretrain_data.build import build_pretrain_data, read_task_rows
from pretrain_data.shards import example_row, image_paths, read_shard, write_shard
from pretrain_data.tasks import TASKS, draw_examples


def test_every_task_is_seeded_and_answerable():
    for task in TASKS:
        a, b = draw_examples(task, 5, seed=3), draw_examples(task, 5, seed=3)
        assert [e.target for e in a] == [e.target for e in b]  # the same seed, the same stream
        assert all(e.images or e.video is not None for e in a)
        assert all(e.kind in ("count", "boxes", "text", "caption") for e in a)
    counts = draw_examples("counting", 40, seed=0)
    assert all(0 <= int(e.answer) <= 5 for e in counts)
    boxes = draw_examples("grounding", 10, seed=0)
    assert all(len(parse_boxes(e.answer)) == 1 for e in boxes)


def test_rows_round_trip_with_their_images(tmp_path):
    examples = draw_examples("interleaved", 2, 0) + draw_examples("video", 1, 0)
    rows = [example_row(e, f"x{i}", tmp_path / "images") for i, e in enumerate(examples)]
    write_shard(rows, tmp_path / "mix.train.jsonl")
    back = read_shard(tmp_path / "mix.train.jsonl")
    assert [len(image_paths(r)) for r in back] == [2, 2, 8]  # two scenes each; eight video frames
    assert back[2]["messages"][0]["content"][0] == {"type": "video", "video": image_paths(back[2]), "fps": 2.0}
    assert back[0]["messages"][-1] == {"role": "assistant", "content": examples[0].target}


def test_parquet_shards_read_like_jsonl(tmp_path):
    rows = [example_row(e, f"p{i}", tmp_path / "images") for i, e in enumerate(draw_examples("ocr", 3, 0))]
    table = pa.table({k: [json.dumps(r[k]) if k == "messages" else r[k] for r in rows] for k in rows[0]})
    pq.write_table(table, tmp_path / "ocr.parquet")
    write_shard(rows, tmp_path / "ocr.jsonl")
    assert read_shard(tmp_path / "ocr.parquet") == read_shard(tmp_path / "ocr.jsonl")


@pytest.mark.parametrize("line, message", [
    ('"just text"', "mine.jsonl:1: a shard row must be an object"),
    ('{"task": "caption"}', "mine.jsonl:1: row lacks ['messages']"),
    ('{"task": "c", "messages": [{"role": "user", "content": "hi"}]}', "must end with the assistant's"),
    ('{"task": "c", "messages": [{"role": "user", "content": [{"type": "image", "image": "gone.png"}]}, '
     '{"role": "assistant", "content": "x"}]}', "mine.jsonl:1: image gone.png not found"),
    ('{"task": ', "mine.jsonl:1: not valid JSON"),
])
def test_bad_rows_name_file_line_and_fix(tmp_path, line, message):
    (tmp_path / "mine.jsonl").write_text(line + "\n")
    with pytest.raises((ValueError, FileNotFoundError), match=message.replace("[", r"\[").replace("]", r"\]")):
        read_shard(tmp_path / "mine.jsonl")


def test_build_writes_clean_shards_and_a_report(tmp_path):
    report = build_pretrain_data(tmp_path, {"caption": (40, 8), "counting": (30, 8)}, seed=0)
    train, held_out = read_task_rows(tmp_path, "train"), read_task_rows(tmp_path, "eval")
    assert sorted(train) == sorted(held_out) == ["caption", "counting"]
    assert len(held_out["caption"]) == 8
    for task, counts in report["per_task"].items():
        assert counts["drawn"] == counts["duplicate"] + counts["contaminated"] + counts["kept"] == len(
            train[task]) + counts["duplicate"] + counts["contaminated"]
    assert (tmp_path / "done").exists() and json.loads((tmp_path / "hygiene.json").read_text())["bands"] == 8
    with pytest.raises(FileNotFoundError, match="no train shards for \\['ocr'\\]"):
        read_task_rows(tmp_path, "train", ["ocr"])

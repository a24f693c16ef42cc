"""The trace index, filters and run queries on a synthetic run (see conftest.py)."""

from __future__ import annotations

import json

import pytest

from posttrain.cli import main
from posttrain.viewer import index as index_module
from posttrain.viewer.filters import TraceFilter
from posttrain.viewer.index import TraceIndex
from posttrain.viewer.run import RunTraces


def test_index_reads_records_back_by_offset(run_dir, rows):
    index = TraceIndex(run_dir / "01-rl" / "traces.jsonl")
    assert len(index) == 12 and not index.torn and index.bad_lines == 0
    assert [r for _, r in index.read([5, 0])] == [rows[5], rows[0]]
    assert list(index.steps) == [0] * 4 + [1] * 4 + [2] * 4
    assert index.distinct_modes() == ["no_think", "think"]
    assert list(index.errors).count(1) == 1


def test_truncated_last_line_still_loads_and_completes_on_refresh(make_run, rows):
    tail = json.dumps(rows[-1])
    run = make_run(rows[:-1], torn_tail=tail[:40])  # a crash mid-write
    path = run / "01-rl" / "traces.jsonl"
    index = TraceIndex(path)
    assert len(index) == 11 and index.torn
    assert next(index.read([10]))[1] == rows[10]
    with open(path, "a") as f:  # the writer finishes the line (a live run)
        f.write(tail[40:] + "\n")
    index.refresh()
    assert len(index) == 12 and not index.torn
    assert next(index.read([11]))[1] == rows[11]


def test_damaged_middle_line_is_counted_and_shrunk_file_is_reindexed(run_dir):
    path = run_dir / "01-rl" / "traces.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "{not json\n" + "".join(lines[1:]))
    index = TraceIndex(path)
    assert len(index) == 12 and index.bad_lines == 1
    path.write_text("".join(lines[:4]))  # a resumed run truncated the log
    index.refresh()
    assert len(index) == 4 and index.bad_lines == 0


def test_filters(run_dir):
    run = RunTraces(run_dir)
    count = lambda **kw: run.query(TraceFilter(**kw))[0]  # noqa: E731
    assert count() == 12
    assert count(mode="think") == 6
    assert count(step=1, group=0) == 2
    assert count(min_reward=0.5) == 6
    assert count(max_reward=0.5) == 5  # the failed reward (None) is in no range
    assert count(error=True) == 1
    assert count(text="ZEBRA") == 2
    assert count(text="not bold") == 1  # reward messages are searched too
    total, page = run.query(TraceFilter(mode="no_think"), offset=4, limit=10)
    assert total == 6 and [r["step"] for _, _, r in page] == [2, 2]


def test_group_prompt_history_and_images(run_dir):
    run = RunTraces(run_dir)
    group = run.group("01-rl", 2, 0)
    assert [r["sample_index"] for _, _, r in group] == [0, 1]
    total, rows = run.prompt_history("p1")
    assert total == 6 and sorted({r["step"] for _, _, r in rows}) == [0, 1, 2]
    assert run.image_path("01-rl", "trace_images/0-0-0.png").name == "0-0-0.png"
    assert run.image_path("01-rl", "../01-rl/done.json") is not None  # inside the stage: allowed
    assert run.image_path("01-rl", "../../synthetic/01-rl/../../etc") is None
    assert run.image_path("01-rl", "/etc/passwd") is None


def test_show_command_prints_matching_samples(run_dir, capsys):
    assert main(["traces", "show", str(run_dir), "--mode", "think", "--max-reward", "0", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "\\boxed{78}" in out and "2 of 3 matching samples shown" in out
    assert main(["traces", "show", str(run_dir), "--error"]) == 0
    out = capsys.readouterr().out
    assert "reward error: exception" in out and "<script>document.title" in out


def test_held_out_answers_are_their_own_stage_and_only_shown_when_asked_for(run_dir, rows, capsys):
    answer = {**rows[0], "stage": "01-rl:eval", "prompt_id": "held-out-7", "label": "before", "prompt": "2 + 2?"}
    (run_dir / "01-rl" / "eval_traces.jsonl").write_text(json.dumps(answer) + "\n")
    assert main(["traces", "show", str(run_dir), "--text", "2 + 2"]) == 0
    assert "held-out-7" not in capsys.readouterr().out  # the default is the training samples
    assert main(["traces", "show", str(run_dir), "--stage", "01-rl:eval"]) == 0
    out = capsys.readouterr().out
    assert "held-out-7" in out and "1 of 1 matching samples shown" in out


BAD_LINES = {  # what a damaged or hostile trace line holds -> the reason the note gives
    "deep JSON": ("[" * 200_000 + "]" * 200_000, "JSON nested too deeply to parse"),
    "huge step": ('{"step": 1e23}', "step: Input should be a valid integer"),
    "step past the index's arrays": ('{"step": 100000000000000000000000}', "step: Input should be less than or "
                                                                           "equal to 2147483647"),
    "5000-digit number": ('{"step": ' + "9" * 5000 + "}", "not JSON (Exceeds the limit (4300 digits) for integer "
                                                          "string conversion: value has 5000 digits; use "
                                                          "sys.set_int_max_str_digits() to increase the limit)"),
    "completion a list": ('{"completion": ["a"]}', "completion: Input should be a valid string"),
    "reward a word": ('{"reward": "lots"}', "reward: Input should be a valid number, unable to parse string as a "
                                            "number"),
    "prompt a number": ('{"prompt": 5}', "prompt: Input should be a valid string"),
    "deep but parseable": ('{"answer": ' + "[" * 40 + "]" * 40 + "}", "answer: Value error, nested deeper than "
                                                                      "32 levels"),
    "not an object": ("[1, 2]", "Input should be a valid dictionary or instance of TraceRecord"),
    "a component not a number": ('{"reward_components": {"math": "x"}}', "reward_components.math: Input should be "
                                 "a valid number, unable to parse string as a number"),
    "an image path not text": ('{"images": ["a.png", 7]}', "images.1: Input should be a valid string"),
    "a prompt id of no type": ('{"prompt_id": 1.5}', "prompt_id: Input should be a valid string"),
    "a teacher gap not a number": ('{"teacher_gaps": [0.5, "x"], "token_texts": ["a", "b"]}', "teacher_gaps.1: "
                                   "Input should be a valid number, unable to parse string as a number"),
    "a gap per token but one": ('{"completion_tokens": 2, "teacher_gaps": [0.5], "token_texts": ["a", "b"]}',
                                "Value error, teacher_gaps: 1 values for 2 token_texts (completion_tokens 2)"),
    "gaps for tokens it has not": ('{"completion_tokens": 3, "teacher_gaps": [0.5, 1], "token_texts": ["a", "b"]}',
                                   "Value error, teacher_gaps: 2 values for 2 token_texts (completion_tokens 3)"),
}


@pytest.mark.parametrize("name", BAD_LINES)
def test_a_bad_record_is_skipped_with_its_line_number_and_reason(run_dir, with_line, name):
    line, reason = BAD_LINES[name]
    with_line(line)
    index = TraceIndex(run_dir / "01-rl" / "traces.jsonl")
    assert len(index) == 12 and index.bad_lines == 1 and not index.torn
    assert index.first_bad == (3, reason)
    assert list(index.steps) == [0] * 4 + [1] * 4 + [2] * 4  # the records after it are all there


def test_show_skips_a_bad_record_with_a_note(run_dir, with_line, capsys):
    with_line('{"step": 1e23}')
    with_line('{"completion": ["a"]}', at=6)
    assert main(["traces", "show", str(run_dir), "--step", "0", "--group", "0"]) == 0
    out = capsys.readouterr().out
    assert "01-rl: 2 unreadable lines skipped (first: line 3, step: Input should be a valid integer)" in out
    assert "2 of 2 matching samples shown" in out


def test_show_survives_a_reward_given_as_text(make_run, rows, capsys):
    rows[0]["reward"] = "0.25"  # a numeric string (how a non-finite value may be logged) reads as a number
    rows[0]["prompt_id"] = 2**63 - 1  # a 64-bit hashed id is an id, not a counter
    assert main(["traces", "show", str(make_run(rows)), "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "reward 0.250" in out and "9223372036854775807" in out


def test_an_over_long_line_is_skipped_without_being_read_whole(run_dir, with_line, monkeypatch):
    monkeypatch.setattr(index_module, "MAX_LINE_BYTES", 4096)
    monkeypatch.setattr(index_module, "_SKIP_CHUNK", 1000)  # skipped 1000 bytes at a time
    line = json.dumps({"step": 0, "completion": "x" * 10_000})  # 10,029 bytes and its newline
    with_line(line, at=1)
    path = run_dir / "01-rl" / "traces.jsonl"
    with open(path, "a") as f:  # and a live writer midway through another one
        f.write(line[:6000])
    index = TraceIndex(path)
    assert len(index) == 12 and index.bad_lines == 1 and index.torn
    assert index.first_bad == (2, "longer than 4,096 bytes (10,030)")
    assert [r["step"] for _, r in index.read([0, 1, 11])] == [0, 0, 2]
    with open(path, "a") as f:
        f.write(line[6000:] + "\n")
    index.refresh()
    assert len(index) == 12 and index.bad_lines == 2 and not index.torn

"""A view of one trace record stays small whatever the record holds (see posttrain/viewer/records.py)."""

from __future__ import annotations

import pytest

from posttrain.viewer.records import BadRecord, text_limit, view_record, view_records


def long_record(rows, middle: int) -> dict:
    """A think-mode record whose reasoning is `middle` characters long; its answer sits at the very end."""
    return {**rows[0], "completion": "<think>" + "x" * middle + "</think><answer>\\boxed{77}</answer>"}


def test_a_long_completion_is_clipped_around_a_marker_and_keeps_its_answer(rows):
    record = long_record(rows, 1_000_000)  # 1,000,042 characters in all
    view = view_record(record, "01-rl", 0, lambda stage, path: path, limit=1000)
    head = "<think>" + "x" * 493  # the first 500 characters
    tail = "x" * 465 + "</think><answer>\\boxed{77}</answer>"  # the last 500 (35 after the x)
    assert view["completion"] == f"{head} … [999,042 of 1,000,042 characters cut] … {tail}"
    assert view["clipped"] == {"completion": 1_000_042}
    assert "".join(s["text"] for s in view["segments"]) == view["completion"]
    assert {"kind": "boxed", "text": "77"} in view["segments"]
    assert view["parsed"]["boxed"] == "77"
    assert view["prompt_text"] == "What is 16 + 61?" and view["answer"] == "77"


def test_a_reply_shares_its_text_among_its_samples(rows):
    big = [("01-rl", i, long_record(rows, 1_000_000)) for i in range(50)]
    views = view_records(big, lambda stage, path: path)
    assert text_limit(50) == 80_000  # 4,000,000 characters of text per reply / 50 samples
    assert {v["clipped"]["completion"] for v in views} == {1_000_042}
    assert {len(v["completion"]) for v in views} == {80_000 + len(" … [920,042 of 1,000,042 characters cut] … ")}


def test_structured_answers_and_tool_calls_are_shown_small(rows):
    record = {**rows[0], "answer": {"bbox": [1, 2, 3, 4]}, "tool_calls": [{"code": "print(1)", "output": "1"}] * 3}
    view = view_record(record, "01-rl", 0, lambda stage, path: path)
    assert view["answer"] == '{"bbox": [1, 2, 3, 4]}'
    assert view["tool_calls"] == 3  # their code and output are in the completion's sandbox segments


def test_a_record_read_back_wrong_is_refused_not_drawn_half(rows):
    with pytest.raises(BadRecord, match="^completion: Input should be a valid string$"):
        view_record({**rows[0], "completion": ["a"]}, "01-rl", 0, lambda stage, path: path)

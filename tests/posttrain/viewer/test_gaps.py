"""The teacher-gap heat strip of a distill sample (see posttrain/viewer/gaps.py)."""

from __future__ import annotations

import re

from posttrain.viewer import gaps
from posttrain.viewer.page import template
from posttrain.viewer.records import view_record


def test_a_distill_record_is_viewed_with_one_shaded_piece_per_token(distill_record):
    view = view_record(distill_record, "01-distill", 0, lambda stage, path: path)
    assert [p["text"] for p in view["teacher_strip"]] == distill_record["token_texts"]
    assert [p["shade"] for p in view["teacher_strip"]] == [0, 2, -3, 0, 4, -1]  # gaps 0, .6, -1.2, .05, 3, -.3
    assert view["teacher"] == "thinker" and abs(view["teacher_gap"] - 2.15 / 6) < 1e-12


def test_a_record_without_gaps_has_no_strip(rows):
    assert view_record(rows[0], "01-rl", 0, lambda stage, path: path)["teacher_strip"] is None


def test_a_long_strip_keeps_its_first_and_last_tokens_around_a_marker():
    pieces = gaps.strip(["ab"] * 1000, [1.0] * 1000, 170)  # 42 characters a piece; 85 kept at each end: 2 pieces
    assert [p["text"] for p in pieces] == ["ab", "ab", " … [996 of 1,000 tokens cut] … ", "ab", "ab"]
    assert pieces[2]["shade"] is None and pieces[0]["shade"] == 3


def test_the_page_draws_the_shades_at_the_same_gaps():
    thresholds = re.search(r"const GAP_THRESHOLDS = \[([^\]]*)\]", template()).group(1)
    assert [float(t) for t in thresholds.split(",")] == list(gaps.THRESHOLDS)

"""The report's per-step trace aggregates (posttrain/viewer/stats.py) survive a damaged trace file."""

from __future__ import annotations

import json

from posttrain.viewer.stats import TraceStats


def test_bad_records_are_left_out_of_the_aggregates_and_counted(tmp_path):
    good = [{"step": 0, "mode": "think", "reward": 1.0, "completion_tokens": 10},
            {"step": 0, "mode": "think", "reward": 0.0, "completion_tokens": 30}]
    bad = ["[" * 200_000 + "]" * 200_000,  # not even JSON to Python: too deep
           json.dumps({"step": 0, "mode": ["think"], "reward": 5.0}),  # a list for a mode
           json.dumps({"step": 0, "mode": "think", "completion": ["a"], "reward": 5.0})]
    path = tmp_path / "traces.jsonl"
    path.write_text("\n".join([json.dumps(good[0]), *bad, json.dumps(good[1])]) + "\n")
    stats = TraceStats.read(path)
    assert stats.skipped == 2  # the too-deep line is no JSON record at all, like a torn one
    assert TraceStats.series(stats.reward["think"]) == ([0], [0.5])
    assert TraceStats.series(stats.length["think"]) == ([0], [20.0])

"""The chaos run's own checks (bench/chaos.py): a lost or duplicated trace step must be caught, and the kill
plan must kill the driver once, after the first checkpoint."""

import json
import random

from bench.chaos import check_traces, kill_plan, last_step


def write_traces(stage_dir, steps):
    lines = [json.dumps({"step": s, "prompt_id": f"p{p}", "sample_index": i}) for s in steps for p in range(2)
             for i in range(2)]
    (stage_dir / "traces.jsonl").write_text("\n".join(lines) + "\n")


def test_whole_traces_pass(tmp_path):
    write_traces(tmp_path, [0, 1, 2])
    assert check_traces(tmp_path, 3, 4)["ok"] and last_step(tmp_path) == 2


def test_a_lost_step_and_a_replayed_step_are_caught(tmp_path):
    write_traces(tmp_path, [0, 2, 2])
    report = check_traces(tmp_path, 3, 4)
    assert not report["ok"] and report["missing_steps"] == [1] and report["duplicated_steps"] == [2]


def test_the_driver_is_killed_once_after_the_first_checkpoint():
    plan = kill_plan(300, 25, 25, random.Random(0))
    assert list(plan.values()).count("driver") == 1 and min(s for s, t in plan.items() if t == "driver") > 25
    assert set(plan.values()) - {"driver"} <= {"rollout", "reward", "learner"} and len(plan) == 12
    short = kill_plan(6, 2, 2, random.Random(0))
    assert sorted(short) == [2, 3, 4] and short[3] == "driver"
